"""FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html) through the router: the spec's example of
each operation, the rules (one element selected, delete of nothing, indexes, value types, parts), the
422 naming the operation, validation of the result like an update, conditional patch, a read after."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions import fhirpath_patch
from tests.interactions.conftest import Call, doc


def op(type: str, path: str, **parts: Any) -> dict[str, Any]:
    """One ``operation`` parameter; ``value`` is given as the part's own keys (``{"valueDate": ...}``)."""
    out: list[dict[str, Any]] = [{"name": "type", "valueCode": type}, {"name": "path", "valueString": path}]
    for name, v in parts.items():
        if name == "value":
            out.append({"name": "value", **v})
        elif name in ("index", "source", "destination"):
            out.append({"name": name, "valueInteger": v})
        else:
            out.append({"name": name, "valueString": v})
    return {"name": "operation", "part": out}


def params(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


PATIENT = {"resourceType": "Patient", "id": "p", "birthDate": "1974-12-25",
           "identifier": [{"system": "http://a", "value": "1"}, {"system": "http://b", "value": "2"}],
           "name": [{"family": "Kim", "given": ["Minjun", "Jae"]}]}


@pytest.fixture
async def patient(call: Call) -> Call:
    await call("PUT", "Patient/p", PATIENT)
    return call


async def patched(call: Call, *ops: dict[str, Any], path: str = "Patient/p") -> dict[str, Any]:
    resp = await call("PATCH", path, params(*ops))
    assert resp.status == 200
    return doc(resp)


async def refused(call: Call, *ops: dict[str, Any]) -> FhirError:
    err = await call.error("PATCH", "Patient/p", params(*ops))
    assert err.status == 422, err.diagnostics
    return err


# -- the spec's examples, one per operation ---------------------------------------------------------


async def test_add_a_primitive(patient: Call) -> None:
    out = await patched(patient, op("delete", "Patient.birthDate"),
                        op("add", "Patient", name="birthDate", value={"valueDate": "1930-01-01"}))
    assert out["birthDate"] == "1930-01-01"


async def test_add_an_anonymous_element_with_parts(patient: Call) -> None:
    value = {"part": [{"name": "name", "valueHumanName": {"text": "a name"}},
                      {"name": "relationship", "valueCodeableConcept": {"text": "mother"}}]}
    out = await patched(patient, op("add", "Patient", name="contact", value=value))
    assert out["contact"] == [{"name": {"text": "a name"}, "relationship": [{"text": "mother"}]}]


async def test_add_a_human_name_given_as_parts_appends_to_the_list(patient: Call) -> None:
    value = {"part": [{"name": "family", "valueString": "Lee"}, {"name": "given", "valueString": "Seo"},
                      {"name": "given", "valueString": "Yeon"}]}
    out = await patched(patient, op("add", "Patient", name="name", value=value))
    assert out["name"] == [PATIENT["name"][0], {"family": "Lee", "given": ["Seo", "Yeon"]}]


async def test_insert_at_an_index(patient: Call) -> None:
    out = await patched(patient, op("insert", "Patient.identifier", index=1,
                                    value={"valueIdentifier": {"system": "http://c", "value": "3"}}))
    assert [i["system"] for i in out["identifier"]] == ["http://a", "http://c", "http://b"]
    out = await patched(patient, op("insert", "Patient.name[0].given", index=0, value={"valueString": "Z"}))
    assert out["name"][0]["given"] == ["Z", "Minjun", "Jae"]


async def test_delete(patient: Call) -> None:
    out = await patched(patient, op("delete", "Patient.identifier.where(system = 'http://a')"))
    assert out["identifier"] == [{"system": "http://b", "value": "2"}]
    out = await patched(patient, op("delete", "Patient.birthDate"))
    assert "birthDate" not in out


async def test_delete_of_nothing_is_no_change(patient: Call) -> None:
    resp = await patient("PATCH", "Patient/p", params(op("delete", "Patient.gender")))
    assert resp.status == 200 and doc(resp)["meta"]["versionId"] == "1"


async def test_delete_leaves_no_empty_element(patient: Call) -> None:
    out = await patched(patient, op("delete", "Patient.name.family"), op("delete", "Patient.name.given[1]"),
                        op("delete", "Patient.name.given[0]"))
    assert "name" not in out


async def test_replace(patient: Call) -> None:
    out = await patched(patient, op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}),
                        op("replace", "Patient.name.given.last()", value={"valueString": "J."}))
    assert out["birthDate"] == "1930-01-01" and out["name"][0]["given"] == ["Minjun", "J."]


async def test_replace_a_choice_element_with_another_type(call: Call) -> None:
    await call("PUT", "Observation/o", {"resourceType": "Observation", "id": "o", "status": "final",
                                        "code": {"text": "bp"}, "valueString": "high"})
    out = await patched(call, op("replace", "Observation.value",
                                 value={"valueQuantity": {"value": 120, "unit": "mmHg"}}), path="Observation/o")
    assert out["valueQuantity"] == {"value": 120, "unit": "mmHg"} and "valueString" not in out


async def test_move(patient: Call) -> None:
    out = await patched(patient, op("move", "Patient.identifier", source=0, destination=1))
    assert [i["system"] for i in out["identifier"]] == ["http://b", "http://a"]


async def test_extensions_of_primitive_values(patient: Call) -> None:
    ext = {"valueExtension": {"url": "http://example.org/precision", "valueCode": "day"}}
    out = await patched(patient, op("add", "Patient.birthDate", name="extension", value=ext),
                        op("add", "Patient.name.given[1]", name="extension", value=ext))
    assert out["_birthDate"] == {"extension": [ext["valueExtension"]]}
    assert out["name"][0]["_given"] == [None, {"extension": [ext["valueExtension"]]}]
    out = await patched(patient, op("replace", "Patient.birthDate.extension.value", value={"valueCode": "month"}),
                        op("delete", "Patient.name.given.extension"))
    assert out["_birthDate"]["extension"][0]["valueCode"] == "month" and "_given" not in out["name"][0]
    out = await patched(patient, op("delete", "Patient.birthDate.extension"))
    assert "_birthDate" not in out and out["birthDate"] == "1974-12-25"


async def test_round_trip_patch_then_read(patient: Call) -> None:
    await patched(patient, op("add", "Patient", name="gender", value={"valueCode": "female"}),
                  op("replace", "Patient.name.family", value={"valueString": "Park"}))
    read = doc(await patient("GET", "Patient/p"))
    assert read["gender"] == "female" and read["name"][0]["family"] == "Park"
    assert read["meta"]["versionId"] == "2"
    history = doc(await patient("GET", "Patient/p/_history"))
    assert [e["request"]["method"] for e in history["entry"]] == ["PATCH", "PUT"]


async def test_conditional_patch(patient: Call) -> None:
    resp = await patient("PATCH", "Patient", params(op("add", "Patient", name="active", value={"valueBoolean": True})),
                         query=[("identifier", "http://a|1")])
    assert resp.status == 200 and doc(resp)["active"] is True


# -- refusals: 422 naming the operation and the path ------------------------------------------------


async def test_errors_name_the_operation_and_the_path(patient: Call) -> None:
    ok = op("add", "Patient", name="gender", value={"valueCode": "male"})
    err = await refused(patient, ok, op("replace", "Patient.identifier", value={"valueIdentifier": {"value": "x"}}))
    assert "parameter[1]" in err.diagnostics and "replace" in err.diagnostics
    assert "Patient.identifier" in err.diagnostics and "2 elements" in err.diagnostics
    assert list(err.expression) == ["Parameters.parameter[1]"]
    # Nothing of the patch was written.
    assert "gender" not in doc(await patient("GET", "Patient/p"))


@pytest.mark.parametrize(("operation", "says"), [
    (op("frobnicate", "Patient"), "unknown operation type"),
    (op("replace", "Patient.gender", value={"valueCode": "male"}), "selects nothing"),
    (op("delete", "Patient.name.given"), "selects 2 elements"),
    (op("replace", "Patient.birthDate", value={"valueBoolean": True}), "takes a date"),
    (op("replace", "Patient.name", value={"valueIdentifier": {"value": "1"}}), "takes a HumanName"),
    (op("add", "Patient", name="contact", value={"valueHumanName": {"family": "x"}}), "parts"),
    (op("add", "Patient", name="birthDate", value={"valueDate": "2000"}), "already has"),
    (op("add", "Patient", name="nickname", value={"valueString": "x"}), "no element 'nickname'"),
    (op("insert", "Patient.identifier", index=3, value={"valueIdentifier": {"value": "x"}}), "out of range"),
    (op("insert", "Patient.birthDate", index=0, value={"valueDate": "2000"}), "not a list"),
    (op("move", "Patient.identifier", source=0, destination=2), "out of range"),
    (op("replace", "Patient.birthDate"), "missing part(s) 'value'"),
    (op("add", "Patient", value={"valueCode": "male"}), "missing part(s) 'name'"),
    (op("insert", "Patient.identifier", value={"valueIdentifier": {"value": "x"}}), "missing part(s) 'index'"),
    (op("delete", "Patient.name.where("), "cannot be evaluated"),
    (op("replace", "Patient", value={"valueString": "x"}), "the resource itself"),
    (op("add", "Patient", name="contact", value={"part": [{"name": "nope", "valueString": "x"}]}), "no element 'nope'"),
])
async def test_bad_operations_are_422(patient: Call, operation: dict[str, Any], says: str) -> None:
    err = await refused(patient, operation)
    kind = operation["part"][0]["valueCode"]
    assert says in err.diagnostics and f"({kind}" in err.diagnostics, err.diagnostics
    assert "parameter[0]" in err.diagnostics


async def test_a_parameter_not_named_operation_is_422(patient: Call) -> None:
    err = await refused(patient, {"name": "op", "part": []})
    assert "not named 'operation'" in err.diagnostics


async def test_malformed_parts_are_422(patient: Call) -> None:
    for parts in ([{"name": ["type"]}], [{"name": "type", "valueCode": "delete"}] * 2, "x", [{"name": "colour"}]):
        err = await refused(patient, {"name": "operation", "part": parts})
        assert "parameter[0]" in err.diagnostics


async def test_the_type_and_id_cannot_change(patient: Call) -> None:
    err = await refused(patient, op("replace", "Patient.id", value={"valueId": "other"}))
    assert "type or id" in err.diagnostics


async def test_the_result_is_validated_like_an_update(patient: Call) -> None:
    err = await patient.error("PATCH", "Patient/p",
                              params(op("add", "Patient", name="gender", value={"valueCode": "bogus"})))
    assert err.status in (400, 422) and "gender" in str([i.to_json() for i in err.issues])
    assert "gender" not in doc(await patient("GET", "Patient/p"))


async def test_resolve_to_another_resource_is_refused(call: Call) -> None:
    await call("PUT", "Patient/other", {"resourceType": "Patient", "id": "other", "gender": "male"})
    await call("PUT", "Observation/o", {"resourceType": "Observation", "id": "o", "status": "final",
                                        "code": {"text": "bp"}, "subject": {"reference": "Patient/other"}})
    err = await call.error("PATCH", "Observation/o", params(
        op("replace", "Observation.subject.resolve().id", value={"valueId": "o"})))
    assert err.status == 422 and "not an element of the resource being patched" in err.diagnostics


async def test_resolve_to_a_contained_resource_is_allowed(call: Call) -> None:
    await call("PUT", "Observation/o", {
        "resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "bp"},
        "contained": [{"resourceType": "Patient", "id": "c1", "gender": "male"}], "subject": {"reference": "#c1"}})
    out = await patched(call, op("replace", "Observation.subject.resolve().gender", value={"valueCode": "female"}),
                        path="Observation/o")
    assert out["contained"][0]["gender"] == "female"


def test_malformed_operations_are_never_a_crash(shared_definitions: Definitions) -> None:
    """Random combinations of parts, paths and values: a changed resource or a 400/422, nothing else."""
    rnd = random.Random(17)
    paths = ["Patient", "Patient.name", "Patient.name.given", "Patient.name.given[1]", "Patient.birthDate",
             "Patient.birthDate.extension", "Patient.contained[0].id", "1 + 1", "'x'", "%resource", "",
             "Patient.name.where(", "Patient.children()", "Patient.identifier.system", "name.family"]
    values: list[Any] = [None, {"valueString": "x"}, {"valueDate": "2000"}, {"valueBoolean": True},
                         {"valueHumanName": {"family": "z"}}, {"part": [{"name": "family", "valueString": "q"}]},
                         {"part": "x"}, {"part": [1, 2]}, {"resource": {"resourceType": "Patient"}},
                         {"valueFoo": 1}, {"valueString": "x", "valueCode": "y"}, {"part": [{"name": "given"}]}]
    resource = {**PATIENT, "contained": [{"resourceType": "Patient", "id": "c"}],
                "_birthDate": {"extension": [{"url": "http://x", "valueString": "y"}]}}
    for _ in range(600):
        parts: list[Any] = []
        kind = rnd.choice(["add", "insert", "delete", "replace", "move", None, 5])
        if kind is not None:
            parts.append({"name": "type", "valueCode": kind})
        if rnd.random() < 0.9:
            parts.append({"name": "path", "valueString": rnd.choice(paths)})
        if rnd.random() < 0.5:
            parts.append({"name": "name", "valueString": rnd.choice(["given", "name", "gender", "extension", ""])})
        value = rnd.choice(values)
        if value is not None:
            parts.append({"name": "value", **value})
        for name in ("index", "source", "destination"):
            if rnd.random() < 0.4:
                parts.append({"name": name, "valueInteger": rnd.choice([-1, 0, 1, 5, "x", True])})
        try:
            fhirpath_patch.apply(shared_definitions, resource, params({"name": "operation", "part": parts}))
        except FhirError as err:
            assert err.status in (400, 422), err.diagnostics
