"""Hypothesis properties for the endpoints that take structured documents: batch and transaction Bundles
(``POST /fhir``), ``$process-message``, ``$validate``, ``$reindex``, ``POST [type]/_search`` form bodies and
JSON Patch. Valid documents (examples/bundles and small ones built here) are broken in plausible ways; the
server must answer every one with a status < 500, an OperationOutcome for every error, a response message
(200) or a 400 OperationOutcome for messages, and leave stored data as it was when it refused the request.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_exchange.settings import Settings
from tests.api.conftest import oo


@pytest.fixture(name="settings")
def document_settings(settings: Settings) -> Settings:
    """The example Bundles seed the documents broken here, each on its own: the consult workflow (which
    needs the consult's earlier steps) is tested in tests/consult; these tests are about documents."""
    return dataclasses.replace(settings, consult_workflow=False)


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bundles"
EXAMPLE_BUNDLES: dict[str, dict[str, Any]] = {p.stem: json.loads(p.read_text())
                                              for p in sorted(EXAMPLES.glob("*.json"))}
TRANSACTIONS = [b for b in EXAMPLE_BUNDLES.values() if b["type"] == "transaction"]
MESSAGES = [b for b in EXAMPLE_BUNDLES.values() if b["type"] == "message"]

# -- the stored data every example must leave alone when its request is refused ------------------------

SEEDS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "seed", "gender": "female", "name": [{"family": "Seed"}],
     "identifier": [{"system": "urn:oid:1.2.410.100.1", "value": "seed-1"}]},
    {"resourceType": "Organization", "id": "seed-org", "name": "Seed Hospital"},
    {"resourceType": "Observation", "id": "seed-obs", "status": "final", "code": {"text": "weight"},
     "subject": {"reference": "Patient/seed"}},
]
# Every type the documents below write (examples included): their counts are part of the snapshot.
TYPES = ("Patient", "Organization", "Observation", "Consent", "ServiceRequest", "Task", "Communication",
         "DocumentReference", "DiagnosticReport", "Practitioner", "Binary", "Parameters", "MessageHeader",
         "SearchParameter")


async def ensure_seeds(client: httpx.AsyncClient) -> None:
    for res in SEEDS:
        got = await client.get(f"/{res['resourceType']}/{res['id']}")
        if got.status_code != 200:
            put = await client.put(f"/{res['resourceType']}/{res['id']}", json=res)
            assert put.status_code in (200, 201), put.text


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    """Versions per type (type history totals: any write, delete included, adds one) and the seeds' bytes."""
    out: dict[str, Any] = {}
    for t in TYPES:
        resp = await client.get(f"/{t}/_history", params={"_count": "1"})
        assert resp.status_code == 200, resp.text
        out[t] = resp.json().get("total")
    for res in SEEDS:
        got = await client.get(f"/{res['resourceType']}/{res['id']}")
        out[f"{res['resourceType']}/{res['id']}"] = (got.status_code, got.content)
    return out


def error_body(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code < 500, (resp.status_code, resp.text)
    return oo(resp)


# -- valid documents to break ------------------------------------------------------------------------

def _patient(n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": f"Doc{n}"}],
            "identifier": [{"system": "urn:oid:1.2.410.100.9", "value": f"doc-{n}"}]}


MINIMAL_TRANSACTION: dict[str, Any] = {
    "resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": _patient(1),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.410.100.9|doc-1"}},
        {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "height"},
                      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                      "performer": [{"reference": "Organization/seed-org"}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Organization", "id": "doc-org", "name": "Doc Org"},
         "request": {"method": "PUT", "url": "Organization/doc-org"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": "W3sib3AiOiAicmVwbGFjZSIsICJwYXRoIjogIi9uYW1lIiwgInZhbHVlIjogIkRvYyBPcmcgMiJ9XQ=="},
         "request": {"method": "PATCH", "url": "Organization/seed-org"}},
        {"request": {"method": "GET", "url": "Patient?identifier=urn:oid:1.2.410.100.1|seed-1"}},
        {"request": {"method": "GET", "url": "Patient/seed"}},
    ]}
MINIMAL_BATCH: dict[str, Any] = {**copy.deepcopy(MINIMAL_TRANSACTION), "type": "batch"}
# The transaction ends with a DELETE of a resource it does not write: a rejected transaction must bring it back.
DELETING_TRANSACTION: dict[str, Any] = {
    "resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Observation/seed-obs"}},
        {"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333", "resource": _patient(3),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**SEEDS[0], "gender": "male"}, "request": {"method": "PUT", "url": "Patient/seed"}},
    ]}

BASES = [MINIMAL_TRANSACTION, MINIMAL_BATCH, DELETING_TRANSACTION, *TRANSACTIONS]

# -- junk --------------------------------------------------------------------------------------------

HUGE = "x" * 5000
WEIRD_STRINGS = ["", " ", "null", "0", "-1", "1e400", "\u0000", "\ud7ff\ufffd", "환자", "💥" * 3, "a/b", "../..",
                 "#frag",
                 "Patient", "Patient/", "Patient/seed", "Patient/seed#x", "Patient?", "Patient?identifier=",
                 "http://other.example/fhir/Patient", "http://test/fhir/Patient/seed", "urn:uuid:", "urn:uuid:x",
                 "urn:uuid:11111111-1111-4111-8111-111111111111", "$validate", "_history", "Bundle",
                 "Patient/" + "9" * 200, HUGE, "W/\"1\"", "W/\"999999999999999999999\"", "true"]
junk_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                        st.sampled_from(WEIRD_STRINGS), st.text(max_size=12))


def _deep(depth: int, leaf: Any) -> Any:
    out = leaf
    for i in range(depth):
        out = [out] if i % 2 else {"x": out}
    return out


junk = st.one_of(
    junk_scalar,
    st.lists(junk_scalar, max_size=3),
    st.dictionaries(st.sampled_from(["resourceType", "id", "reference", "url", "method", "resource", "entry", "x"]),
                    junk_scalar, max_size=3),
    # Deeper than orjson writes (254); deeper still is in test_deeply_nested_documents (hypothesis cannot print it).
    st.builds(_deep, st.sampled_from([50, 260]), junk_scalar),
    st.just({"resourceType": "Bundle", "type": "transaction",
             "entry": [{"request": {"method": "POST", "url": "/"},
                        "resource": {"resourceType": "Bundle", "type": "batch", "entry": []}}]}),
    st.just({"resourceType": "Unicorn"}),
    st.just({"resourceType": "Patient", "id": "seed", "meta": {"versionId": "1"}}),
).map(copy.deepcopy)  # fresh objects: later mutation rounds change them in place


def _walk(data: st.DataObject, doc: Any, max_depth: int = 8) -> list[Any]:
    """A random path of keys/indexes from the root of ``doc`` to some container in it."""
    path: list[Any] = []
    node = doc
    for _ in range(max_depth):
        if isinstance(node, dict) and node:
            keys = sorted(node, key=str)
        elif isinstance(node, list) and node:
            keys = list(range(len(node)))
        else:
            break
        if not data.draw(st.booleans(), label="descend"):
            break
        key = data.draw(st.sampled_from(keys), label="key")
        if not isinstance(node[key], dict | list):
            break
        path.append(key)
        node = node[key]
    return path


def _at(doc: Any, path: list[Any]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate(data: st.DataObject, doc: dict[str, Any], rounds: int = 3) -> dict[str, Any]:
    """``doc`` with 1..``rounds`` random breakages: a value replaced by junk (wrong type, null, number as a
    string...), a member removed, added or duplicated, a list element duplicated or dropped."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, rounds), label="rounds")):
        container = _at(doc, _walk(data, doc))
        kind = data.draw(st.sampled_from(["replace", "delete", "add", "stringify", "duplicate"]), label="kind")
        if isinstance(container, dict):
            if not container or kind == "add":
                key = data.draw(st.sampled_from(["id", "resourceType", "fullUrl", "request", "resource", "entry",
                                                 "url", "method", "reference", "meta", "ifNoneExist", "ifMatch",
                                                 "focus", "eventCoding", "source", "type", "x"]), label="new key")
                container[key] = data.draw(junk, label="value")
                continue
            key = data.draw(st.sampled_from(sorted(container, key=str)), label="member")
            if kind == "delete":
                del container[key]
            elif kind == "stringify":
                container[key] = json.dumps(container[key]) if not isinstance(container[key], str) else 7
            elif kind == "duplicate":
                container[key] = [container[key], copy.deepcopy(container[key])]
            else:
                container[key] = data.draw(junk, label="value")
        elif isinstance(container, list) and container:
            index = data.draw(st.integers(0, len(container) - 1), label="index")
            if kind == "delete":
                del container[index]
            elif kind == "duplicate":
                container.append(copy.deepcopy(container[index]))
            elif kind == "add":
                container.insert(index, data.draw(junk, label="value"))
            else:
                container[index] = data.draw(junk, label="value")
    return doc


# Targeted breakages of one entry (the ones the brief names), on top of the random ones.
def _targeted(data: st.DataObject, bundle: dict[str, Any]) -> dict[str, Any]:
    b = copy.deepcopy(bundle)
    entries = b.get("entry")
    if not isinstance(entries, list) or not entries:
        return b
    i = data.draw(st.integers(0, len(entries) - 1), label="entry")
    e = entries[i] if isinstance(entries[i], dict) else {}
    entries[i] = e
    req = e.get("request") if isinstance(e.get("request"), dict) else {}
    what = data.draw(st.sampled_from([
        "entry-not-list", "request-not-object", "method", "url", "fullUrl-dup", "wrong-type", "nested", "huge-id",
        "unicode-id", "null-resource", "ifnoneexist", "ifmatch", "conditional-ref", "ref", "patch-body"]),
        label="target")
    if what == "entry-not-list":
        b["entry"] = data.draw(st.sampled_from([{}, "entries", 3, None, {"0": entries[0]}]))
    elif what == "request-not-object":
        e["request"] = data.draw(st.sampled_from([[req], "POST Patient", 1, None, True]))
    elif what == "method":
        e["request"] = {**req, "method": data.draw(st.sampled_from(
            ["post", "TRACE", "OPTIONS", "", None, 1, ["POST"], "HEAD", "PATCH", "DELETE", "GET"]))}
    elif what == "url":
        e["request"] = {**req, "url": data.draw(st.sampled_from([*WEIRD_STRINGS,
            "http://test/fhir/Patient", "http://test/fhir/Patient/x#y", "//Patient", "Patient/x/_history/1",
            "Patient/x/$validate", "Patient?_count=0&identifier=a", "metadata", "_search", "Patient/_search",
            "Patient/a/b/c/d", "%50atient", "Patient/%2e%2e", "?identifier=x", "Patient?identifier=%ZZ",
            "Patient/" + "a" * 65, 5, None, {"url": "Patient"}]))}
    elif what == "fullUrl-dup":
        other = entries[data.draw(st.integers(0, len(entries) - 1))]
        full = other.get("fullUrl") if isinstance(other, dict) else None
        e["fullUrl"] = full if isinstance(full, str) else "urn:uuid:11111111-1111-4111-8111-111111111111"
        entries.append(copy.deepcopy(e))
    elif what == "wrong-type":
        e["resource"] = data.draw(st.sampled_from([
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            {"resourceType": "Unicorn"}, {"resourceType": None}, {"resourceType": 1}, {}, [], "Patient"]))
    elif what == "nested":
        e["resource"] = copy.deepcopy(bundle)
        e["request"] = {"method": data.draw(st.sampled_from(["POST", "PUT"])),
                        "url": data.draw(st.sampled_from(["", "/", "Bundle", "Bundle/nested"]))}
    elif what == "huge-id":
        if isinstance(e.get("resource"), dict):
            e["resource"]["id"] = data.draw(st.sampled_from(["9" * 70, HUGE, "", 12, None]))
        e["request"] = {**req, "url": f"{req.get('url', 'Patient')}/{'9' * 70}"}
    elif what == "unicode-id":
        uid = data.draw(st.sampled_from(["환자", "é", "a b", "\u202e", "x\u0000"]))
        if isinstance(e.get("resource"), dict):
            e["resource"]["id"] = uid
        e["request"] = {**req, "url": f"Patient/{quote(uid)}", "method": "PUT"}
    elif what == "null-resource":
        e["resource"] = None
    elif what == "ifnoneexist":
        e["request"] = {**req, "ifNoneExist": data.draw(st.sampled_from(
            ["", "?", "identifier", "_count=1", "unknown-param=x", "identifier=a&identifier=b", "Patient?",
             "_id=seed", "birthdate=notadate", "_sort=name", 5, ["identifier=x"], "identifier=%zz", "?&&=&"]))}
    elif what == "ifmatch":
        e["request"] = {**req, "ifMatch": data.draw(st.sampled_from(
            ['W/"0"', 'W/"99999999999999999999999"', "x", "", 3, 'W/"-1"', "*"]))}
    elif what == "conditional-ref":
        if isinstance(e.get("resource"), dict):
            e["resource"]["subject"] = {"reference": data.draw(st.sampled_from(
                ["Patient?identifier=nothing", "Patient?", "Patient?_count=0", "Patient?unknown=1",
                 "Unicorn?x=1", "Patient?identifier=urn:oid:1.2.410.100.9|doc-1", "Patient?birthdate=x",
                 "Patient?_id=seed", "Patient?identifier=a&_sort=zzz"]))}
    elif what == "ref":
        if isinstance(e.get("resource"), dict):
            e["resource"]["subject"] = data.draw(st.sampled_from([
                {"reference": 5}, {"reference": None}, {"reference": ["Patient/seed"]}, "Patient/seed",
                {"reference": "urn:uuid:nowhere"}, {"reference": "#missing"}, {"reference": "Patient/seed#x"}]))
    elif what == "patch-body":
        e["request"] = {**req, "method": "PATCH", "url": "Organization/seed-org"}
        e["resource"] = data.draw(st.sampled_from([
            {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "!!!"},
            {"resourceType": "Binary", "data": 5},
            {"resourceType": "Binary", "data": "e30="},  # {}
            {"resourceType": "Binary", "data": "bnVsbA=="},  # null
            {"resourceType": "Binary", "data": "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL2lkIn1d"},  # remove /id
            {"resourceType": "Binary", "data": "W3sib3AiOiJtb3ZlIn1d"},  # [{"op":"move"}]
            {"resourceType": "Binary", "data": "/w=="},  # not UTF-8
            {"resourceType": "Parameters", "parameter": []}, [{"op": "remove", "path": "/name"}], None]))
    # The sampled values above are shared between examples; a copy keeps later mutation off them.
    return copy.deepcopy(b)


@st.composite
def broken_bundles(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(st.data())
    base = draw(st.sampled_from(BASES))
    doc = draw(st.sampled_from(["targeted", "random", "both"]))
    if doc in ("targeted", "both"):
        base = _targeted(data, base)
    if doc in ("random", "both"):
        base = mutate(data, base)
    return base


# -- batch and transaction ---------------------------------------------------------------------------

async def _post_bundle(client: httpx.AsyncClient, bundle: Any) -> None:
    await ensure_seeds(client)
    before = await snapshot(client)
    resp = await client.post("", content=json.dumps(bundle).encode(),
                             headers={"content-type": "application/fhir+json"})
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        error_body(resp)
        assert await snapshot(client) == before
        return
    body = resp.json()
    assert body["resourceType"] == "Bundle" and body["type"] in ("batch-response", "transaction-response"), body
    if body["type"] == "batch-response":
        for e in body.get("entry", []):  # an entry's own 500 would be a server fault hidden in a 200
            status = int(e["response"]["status"].split()[0])
            assert status < 500, e
            if status >= 400:
                outcome = e["response"]["outcome"]
                assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"], e


@SETTINGS
@given(bundle=broken_bundles())
async def test_broken_bundles_never_500(raw_client: httpx.AsyncClient, bundle: dict[str, Any]) -> None:
    await _post_bundle(raw_client, bundle)


@pytest.mark.slow
@SLOW
@given(bundle=broken_bundles())
async def test_broken_bundles_never_500_long(raw_client: httpx.AsyncClient, bundle: dict[str, Any]) -> None:
    await _post_bundle(raw_client, bundle)


@pytest.mark.parametrize("name", [*sorted(k for k in EXAMPLE_BUNDLES if "transaction" in k), "minimal", "deleting"])
async def test_unbroken_transactions_are_accepted(client: httpx.AsyncClient, name: str) -> None:
    """The documents the properties break are valid to begin with (else the properties test little)."""
    await ensure_seeds(client)
    doc = {"minimal": MINIMAL_TRANSACTION, "deleting": DELETING_TRANSACTION}.get(name) or EXAMPLE_BUNDLES[name]
    resp = await client.post("", json=doc)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("bad", [
    {"resourceType": "Bundle", "type": "transaction", "entry": {}},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": []}]},
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "BREW", "url": "Patient"}}]},
    {"resourceType": "Bundle", "type": ["transaction"]},
    {"resourceType": "Bundle", "type": "searchset", "entry": []},
    [{"resourceType": "Bundle", "type": "transaction"}],
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": ["POST"], "url": "Patient"}}]},
    {"resourceType": "Bundle", "type": "transaction",
     "entry": [{"resource": {"resourceType": 1}, "request": {"method": "POST", "url": "Patient"}}]},
    {"resourceType": "Bundle", "type": "transaction",
     "entry": [{"resource": {"resourceType": "Patient", "id": 5},
                "request": {"method": "PUT", "url": "Patient?_id=x"}}]},
    {"resourceType": "Bundle", "type": "transaction",
     "entry": [{"resource": {"resourceType": "Patient", "id": ["x"]},
                "request": {"method": "PUT", "url": "Patient?_id=x"}}]},
    {"resourceType": "Bundle", "type": "transaction",
     "entry": [{"resource": {"resourceType": "Binary", "data": 5},
                "request": {"method": "PATCH", "url": "Patient/seed"}}]},
    {"resourceType": "Bundle", "type": "transaction",
     "entry": [{"resource": {"resourceType": "Binary", "data": "W10=!"},
                "request": {"method": "PATCH", "url": "Patient/seed"}}]},
])
async def test_rejected_transactions_name_the_problem(raw_client: httpx.AsyncClient, bad: Any) -> None:
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    resp = await raw_client.post("", json=bad)
    assert resp.status_code == 400, resp.text
    error_body(resp)
    assert await snapshot(raw_client) == before


@pytest.mark.parametrize("body_id", [5, ["x"], {"a": 1}, True])
async def test_conditional_update_with_a_non_string_id_is_a_400(raw_client: httpx.AsyncClient, body_id: Any) -> None:
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    resp = await raw_client.put("/Patient", params={"_id": "nobody"}, json={"resourceType": "Patient", "id": body_id})
    assert resp.status_code == 400, resp.text
    error_body(resp)
    assert await snapshot(raw_client) == before


async def test_operations_in_a_transaction_are_a_400(raw_client: httpx.AsyncClient) -> None:
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    resp = await raw_client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/seed/$validate"}}]})
    assert resp.status_code == 400, resp.text
    assert "Bundle.entry[0]" in error_body(resp)["issue"][0]["expression"]
    assert await snapshot(raw_client) == before


async def test_validate_against_a_valueset_is_not_a_pass(raw_client: httpx.AsyncClient) -> None:
    resp = await raw_client.post("/Patient/$validate", json={"resourceType": "Patient"},
                                 params={"profile": "http://hl7.org/fhir/ValueSet/administrative-gender"})
    assert resp.status_code == 200, resp.text
    assert any(i["severity"] == "error" and "not a StructureDefinition" in i["diagnostics"]
               for i in error_body(resp)["issue"])


async def test_failing_transaction_rolls_back_its_delete(raw_client: httpx.AsyncClient) -> None:
    """A transaction whose last entry fails leaves the resource its first entry deleted in place."""
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    bad = copy.deepcopy(DELETING_TRANSACTION)
    bad["entry"][2]["resource"]["gender"] = 12
    resp = await raw_client.post("", json=bad)
    assert resp.status_code == 400, resp.text
    error_body(resp)
    assert await snapshot(raw_client) == before


# -- messages ----------------------------------------------------------------------------------------

@st.composite
def broken_messages(draw: st.DrawFn) -> Any:
    data = draw(st.data())
    msg = copy.deepcopy(draw(st.sampled_from(MESSAGES)))
    # A fresh message id, so each example is processed rather than answered from the stored response.
    header = msg["entry"][0]["resource"]
    header["id"] = f"m{draw(st.integers(0, 10**12))}"
    msg.pop("identifier", None)
    what = draw(st.sampled_from(["header", "focus", "event", "source", "random", "entries", "parameters"]))
    if what == "header":
        header.update({k: draw(junk, label=k) for k in draw(st.lists(
            st.sampled_from(["id", "resourceType", "eventCoding", "eventUri", "source", "focus", "response"]),
            min_size=1, max_size=3))})
    elif what == "focus":
        header["focus"] = draw(st.sampled_from([
            None, [], {}, "ServiceRequest/x", [{"reference": 5}], [{"reference": "urn:uuid:nowhere"}],
            [{"reference": None}], [None, 1, "x"], [{"reference": header.get("focus", [{}])[0].get("reference")}] * 2,
            [{"reference": "MessageHeader/" + header["id"]}], [{"display": "no reference"}]]))
    elif what == "event":
        header.pop("eventCoding", None)
        choice = draw(st.sampled_from([
            {"eventCoding": {"system": "http://fhir-exchange.org/fhir/CodeSystem/consult-event", "code": "unknown"}},
            {"eventCoding": {"code": None}}, {"eventCoding": []}, {"eventCoding": "consult-request"},
            {"eventUri": 5}, {"eventUri": "http://example.org/event"}, {"eventUri": ""},
            {"eventCoding": {"system": ["x"], "code": {"a": 1}}},
            {"eventCoding": {"system": "http://fhir-exchange.org/fhir/CodeSystem/consult-event",
                             "code": "consult-cancel"}}]))
        header.update(choice)
    elif what == "source":
        header["source"] = draw(st.sampled_from([None, "x", {"endpoint": 5}, {"endpoint": ""}, [], {"name": "x"}]))
    elif what == "entries":
        msg = _targeted(data, msg) if len(msg["entry"]) > 1 else msg
    else:
        msg = mutate(data, msg)
    if what == "parameters":
        msg = {"resourceType": "Parameters", "parameter": draw(st.sampled_from([
            [{"name": "content", "resource": msg}], [{"name": "content", "resource": msg}] * 2,
            [{"name": "content", "valueString": "x"}], "content", [None], [{"name": "content", "resource": [msg]}]]))}
    return msg


async def _post_message(client: httpx.AsyncClient, message: Any) -> None:
    await ensure_seeds(client)
    before = await snapshot(client)
    resp = await client.post("/$process-message", content=json.dumps(message).encode(),
                             headers={"content-type": "application/fhir+json"})
    # 409: an earlier example used the same message identity for other content (never the cached reply).
    assert resp.status_code in (200, 400, 409), (resp.status_code, resp.text)
    if resp.status_code in (400, 409):
        error_body(resp)
        assert await snapshot(client) == before
        return
    body = resp.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "message", body
    header = body["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    code = header["response"]["code"]
    assert code in ("ok", "transient-error", "fatal-error"), header
    details = body["entry"][1]["resource"]
    assert details["resourceType"] == "OperationOutcome" and details["issue"], body
    if code != "ok":
        assert await snapshot(client) == before


@pytest.mark.parametrize("focus", [[{"reference": 5}], [{"reference": ["ServiceRequest/sr"]}],
                                   [{"reference": {"x": 1}}]])
async def test_message_focus_reference_not_a_string_is_a_fatal_error(raw_client: httpx.AsyncClient,
                                                                      focus: Any) -> None:
    msg = copy.deepcopy(EXAMPLE_BUNDLES["Bundle-message-consult-cancel"])
    msg["entry"][0]["resource"]["focus"] = focus
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    resp = await raw_client.post("/$process-message", json=msg)
    assert resp.status_code == 200, resp.text
    assert resp.json()["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    assert await snapshot(raw_client) == before


@SETTINGS
@given(message=broken_messages())
async def test_broken_messages_answer_a_message_or_400(raw_client: httpx.AsyncClient, message: Any) -> None:
    await _post_message(raw_client, message)


@pytest.mark.slow
@SLOW
@given(message=broken_messages())
async def test_broken_messages_answer_a_message_or_400_long(raw_client: httpx.AsyncClient, message: Any) -> None:
    await _post_message(raw_client, message)


# -- $validate ---------------------------------------------------------------------------------------

parameter = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["resource", "mode", "profile", "x", None, 5, ""])},
                          optional={"resource": junk, "valueCode": junk, "valueUri": junk, "valueString": junk,
                                    "valueCanonical": junk, "part": junk}),
    junk,
)
validate_bodies = st.one_of(
    st.fixed_dictionaries({"resourceType": st.just("Parameters")},
                          optional={"parameter": st.one_of(st.lists(parameter, max_size=4), junk), "id": junk}),
    st.builds(lambda p: {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": p}]},
              st.sampled_from([SEEDS[0], SEEDS[1], {"resourceType": "Patient", "id": 5},
                               {"resourceType": None}, {"resourceType": "Patient", "meta": {"profile": "x"}},
                               {"resourceType": "Patient", "meta": {"profile": [5, None]}},
                               {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "c",
                                                                          "contained": [{}]}]},
                               _deep(260, 1)])),
    junk,
)


async def _validate(client: httpx.AsyncClient, path: str, query: dict[str, str], body: Any) -> None:
    await ensure_seeds(client)
    before = await snapshot(client)
    resp = await client.post(path, params=query, content=json.dumps(body).encode(),
                             headers={"content-type": "application/fhir+json"})
    assert resp.status_code < 500, (resp.status_code, resp.text)
    assert resp.status_code in (200, 400, 404), (resp.status_code, resp.text)
    error_body(resp)  # valid or not, $validate answers an OperationOutcome
    assert await snapshot(client) == before  # $validate never writes


validate_cases = dict(
    path=st.sampled_from(["/Patient/$validate", "/Patient/seed/$validate", "/Patient/nobody/$validate",
                          "/Organization/$validate", "/Unicorn/$validate", "/Patient/" + "x" * 70 + "/$validate"]),
    query=st.dictionaries(st.sampled_from(["mode", "profile"]),
                          st.sampled_from(["create", "update", "delete", "profile", "bogus", "",
                                           "http://hl7.org/fhir/StructureDefinition/Patient",
                                           "http://example.org/unknown", "Patient"]), max_size=2),
    body=validate_bodies)


@SETTINGS
@given(**validate_cases)
async def test_validate_with_broken_parameters_never_500(raw_client: httpx.AsyncClient, path: str,
                                                         query: dict[str, str], body: Any) -> None:
    await _validate(raw_client, path, query, body)


@pytest.mark.slow
@SLOW
@given(**validate_cases)
async def test_validate_with_broken_parameters_never_500_long(raw_client: httpx.AsyncClient, path: str,
                                                              query: dict[str, str], body: Any) -> None:
    await _validate(raw_client, path, query, body)


# -- $reindex and POST _search form bodies -----------------------------------------------------------

form_body = st.one_of(
    st.lists(st.tuples(st.sampled_from(["identifier", "_id", "name", "_count", "_offset", "_sort", "_include",
                                        "_revinclude", "birthdate", "subject", "_has:Observation:subject:status",
                                        "gender:not", "name:contains", "_total", "_summary", "_elements", "", "="]),
                       st.sampled_from(["", "x", "seed", "-1", "0", "99999999999999999999", "ge2020", "abc|",
                                        "|", "Patient:*", "Patient/seed", "%", "%zz", "\u00e9", "a,b,,", "*"])),
             max_size=5).map(lambda ps: "&".join(f"{quote(k)}={quote(v)}" for k, v in ps).encode()),
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
)


@SETTINGS
@given(path=st.sampled_from(["/Patient/_search", "/_search", "/Observation/_search", "/Unicorn/_search"]),
       body=form_body, ctype=st.sampled_from(["application/x-www-form-urlencoded",
                                              "application/x-www-form-urlencoded; charset=latin-1"]))
async def test_form_searches_never_500(raw_client: httpx.AsyncClient, path: str, body: bytes, ctype: str) -> None:
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    resp = await raw_client.post(path, content=body, headers={"content-type": ctype})
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        error_body(resp)
    else:
        assert resp.json()["resourceType"] == "Bundle"
    assert await snapshot(raw_client) == before


@SETTINGS
@given(path=st.sampled_from(["/$reindex", "/Patient/$reindex", "/Unicorn/$reindex", "/Patient/seed/$reindex"]),
       body=st.one_of(st.none(), junk, validate_bodies))
async def test_reindex_with_any_body_never_500(raw_client: httpx.AsyncClient, path: str, body: Any) -> None:
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    content = json.dumps(body).encode() if body is not None else b""
    resp = await raw_client.post(path, content=content, headers={"content-type": "application/fhir+json"})
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        error_body(resp)
    assert await snapshot(raw_client) == before  # reindexing changes no resource


# -- JSON Patch --------------------------------------------------------------------------------------

pointer = st.sampled_from(["", "/", "/id", "/resourceType", "/meta", "/meta/versionId", "/meta/lastUpdated",
                           "/meta/profile", "/meta/profile/0", "/meta/profile/-", "/name", "/name/0", "/name/-",
                           "/name/0/family", "/name/99", "/name/-1", "/name/01", "/gender", "/text/div", "/x~2",
                           "/x~0y~1", "name", "/name/0/given/-", "/identifier/0/value", "/birthDate", "/active",
                           "/contained", "/contained/0", "/extension", "/" + "a/" * 300])
patch_op = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus", "",
                                                  None, 3]),
                           "path": st.one_of(pointer, junk_scalar)},
                          optional={"value": st.one_of(junk, st.just("Patient"), st.just("seed"),
                                                       st.just({"versionId": "99"}), st.just([{"family": "P"}])),
                                    "from": st.one_of(pointer, junk_scalar)}),
    junk,
)
patch_docs = st.one_of(st.lists(patch_op, max_size=4), junk)


async def _patch(client: httpx.AsyncClient, target: str, ops: Any, ctype: str) -> None:
    await ensure_seeds(client)
    before = await snapshot(client)
    resp = await client.patch(target, content=json.dumps(ops).encode(), headers={"content-type": ctype})
    assert resp.status_code < 500, (target, ops, resp.status_code, resp.text)
    if resp.status_code >= 400:
        error_body(resp)
        assert await snapshot(client) == before
        return
    got = resp.json()
    assert got["resourceType"] == "Patient" and got["id"] == "seed", got
    stored = (await client.get("/Patient/seed")).json()
    # The server owns meta.versionId/lastUpdated: a patch cannot forge them.
    history = (await client.get("/Patient/seed/_history")).json()
    assert stored["meta"]["versionId"] == str(history["total"]), (ops, stored)


patch_cases = dict(target=st.sampled_from(["/Patient/seed", "/Patient?identifier=urn:oid:1.2.410.100.1|seed-1",
                                           "/Patient?identifier=nothing", "/Patient/nobody", "/Patient"]),
                   ops=patch_docs,
                   ctype=st.sampled_from(["application/json-patch+json", "application/fhir+json"]))


@SETTINGS
@given(**patch_cases)
async def test_broken_json_patches_never_500(raw_client: httpx.AsyncClient, target: str, ops: Any,
                                             ctype: str) -> None:
    await _patch(raw_client, target, ops, ctype)


@pytest.mark.slow
@SLOW
@given(**patch_cases)
async def test_broken_json_patches_never_500_long(raw_client: httpx.AsyncClient, target: str, ops: Any,
                                                  ctype: str) -> None:
    await _patch(raw_client, target, ops, ctype)


# -- nesting deeper than the server can write back ---------------------------------------------------

def _deep_questionnaire(levels: int) -> str:
    """A valid Questionnaire whose items nest ``levels`` deep (2 JSON levels each), built as text: the
    stdlib encoder would itself run out of recursion."""
    head = tail = ""
    for i in range(levels):
        head += f'{{"linkId":"l{i}","type":"group","text":"t","item":['
        tail = "]}" + tail
    return ('{"resourceType":"Questionnaire","status":"draft","item":[' + head
            + '{"linkId":"leaf","type":"string","text":"t"}' + tail + "]}")


@pytest.mark.parametrize("levels", [130, 480])
@pytest.mark.parametrize("how", ["create", "transaction", "batch", "validate", "message"])
async def test_deeply_nested_documents(raw_client: httpx.AsyncClient, levels: int, how: str) -> None:
    """orjson reads 1024 levels of nesting but writes 254: what cannot be stored is a 400, not a 500."""
    await ensure_seeds(raw_client)
    before = await snapshot(raw_client)
    q = _deep_questionnaire(levels)
    path, body = {
        "create": ("/Questionnaire", q),
        "transaction": ("", '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + q
                        + ',"request":{"method":"POST","url":"Questionnaire"}}]}'),
        "batch": ("", '{"resourceType":"Bundle","type":"batch","entry":[{"resource":' + q
                  + ',"request":{"method":"POST","url":"Questionnaire"}}]}'),
        "validate": ("/Questionnaire/$validate", q),
        "message": ("/$process-message", json.dumps({
            "resourceType": "Bundle", "type": "message", "entry": [{"resource": {
                "resourceType": "MessageHeader", "id": f"deep-{levels}", "source": {"endpoint": "urn:x"},
                "eventCoding": {"system": "urn:x", "code": "e"}, "focus": [{"reference": "urn:uuid:q"}]}},
                {"fullUrl": "urn:uuid:q", "resource": {"resourceType": "Basic", "code": {"text": "x"}}}]})
            .replace('"eventCoding": {', '"eventCoding": {"extension":[' + "[" * (levels - 10) + "]" * (levels - 10)
                     + "],", 1)),
    }[how]
    resp = await raw_client.post(path, content=body.encode(), headers={"content-type": "application/fhir+json"})
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if how == "batch" and resp.status_code == 200:
        status = int(resp.json()["entry"][0]["response"]["status"].split()[0])
        assert status < 500, resp.text[:300]
    elif how in ("validate", "message"):
        assert resp.status_code in (200, 400), resp.text[:300]
        if resp.status_code == 400:
            error_body(resp)
    else:
        error_body(resp)
    if how != "message":
        assert await snapshot(raw_client) == before


def test_validator_survives_deep_nesting(definitions: Any) -> None:
    from fhir_exchange.validation import Validator

    doc = orjson.loads(_deep_questionnaire(480))  # the stdlib parser cannot read it
    issues = Validator(definitions).validate(doc, resource_type="Questionnaire")
    assert [i.message_id for i in issues if i.severity == "error"] == ["too-deep"]
