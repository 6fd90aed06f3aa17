"""Terminology operations over HTTP (ASGI): $expand, $lookup, $validate-code, $subsumes, $translate.

Each test gets its own app and Definitions (a real SQLite file), since several write CodeSystems,
ValueSets and ConceptMaps to the server, which must be usable at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhir_exchange.api.app import create_app, profile_folders
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DOC_TYPES = "http://hl7.org/fhir/ValueSet/c80-doc-typecodes"  # the largest loaded ValueSet (6401 LOINC codes)
KR_DEPARTMENTS = "http://www.hl7korea.or.kr/fhir/krcore/ValueSet/krcore-medicaldepartment-codes"
TRIAGE_CS = "http://example.kr/fhir/CodeSystem/triage"
TRIAGE_VS = "http://example.kr/fhir/ValueSet/triage"

TRIAGE: dict[str, Any] = {
    "resourceType": "CodeSystem", "id": "triage", "url": TRIAGE_CS, "version": "1", "status": "active",
    "content": "complete", "name": "Triage", "language": "en",
    "concept": [
        {"code": "urgent", "display": "Urgent",
         "designation": [{"language": "ko", "value": "긴급"}, {"language": "de", "value": "Dringend"}],
         "concept": [
             {"code": "immediate", "display": "Immediate", "designation": [{"language": "ko", "value": "즉시"}]},
             {"code": "soon", "display": "Within hours", "designation": [{"language": "ko", "value": "수시간 내"}],
              "property": [{"code": "minutes", "valueInteger": 240}]},
         ]},
        {"code": "routine", "display": "Routine", "designation": [{"language": "ko", "value": "일반"}]},
    ],
}
TRIAGE_SET: dict[str, Any] = {
    "resourceType": "ValueSet", "id": "triage", "url": TRIAGE_VS, "status": "active",
    "compose": {"include": [{"system": TRIAGE_CS}]},
}


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, definitions=Definitions.load(profile_folders(), cache_dir=CACHE_DIR))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as c:
            yield c


def params(**values: Any) -> dict[str, Any]:
    """A Parameters body; a dict value becomes a resource or a complex value by its keys."""
    out: list[dict[str, Any]] = []
    for name, value in values.items():
        if isinstance(value, dict) and "resourceType" in value:
            out.append({"name": name, "resource": value})
        elif isinstance(value, dict) and "coding" in value:
            out.append({"name": name, "valueCodeableConcept": value})
        elif isinstance(value, dict):
            out.append({"name": name, "valueCoding": value})
        elif isinstance(value, bool):
            out.append({"name": name, "valueBoolean": value})
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


def param(body: dict[str, Any], name: str) -> Any:
    for p in body["parameter"]:
        if p["name"] == name:
            return p.get("part") or next(v for k, v in p.items() if k.startswith("value"))
    return None


def codes(vs: dict[str, Any]) -> list[str]:
    return [c["code"] for c in vs["expansion"].get("contains", [])]


def issue(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code, body
    return str(body["issue"][0]["diagnostics"])


async def write(http: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    r = await http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


# -- $expand -----------------------------------------------------------------------------------------

async def test_expand_by_id_and_by_url_get_and_post(http: httpx.AsyncClient) -> None:
    by_id = (await http.get("/ValueSet/administrative-gender/$expand")).json()
    by_url = (await http.get("/ValueSet/$expand", params={"url": GENDER_VS})).json()
    posted = await http.post("/ValueSet/$expand", json=params(url=GENDER_VS))
    assert posted.status_code == 200, posted.text
    for vs in (by_id, by_url, posted.json()):
        assert vs["resourceType"] == "ValueSet" and vs["url"] == GENDER_VS
        assert codes(vs) == ["male", "female", "other", "unknown"]
        assert vs["expansion"]["total"] == 4 and vs["expansion"]["offset"] == 0
        assert vs["expansion"]["identifier"].startswith("urn:uuid:") and vs["expansion"]["timestamp"]
        assert vs["expansion"]["contains"][0] == {"system": GENDER, "version": "4.0.1", "code": "male",
                                                  "display": "Male"}
    # The consult IG's terminology (profiles/) expands too.
    consult = (await http.get("/ValueSet/$expand",
                              params={"url": "http://fhir-exchange.org/fhir/ValueSet/consult-recommendation"})).json()
    assert consult["expansion"]["total"] == 4
    # The answer is a valid ValueSet (the server's own $validate finds no error in it).
    checked = (await http.post("/ValueSet/$validate", json=by_id)).json()
    assert not [i for i in checked["issue"] if i["severity"] in ("error", "fatal")], checked
    # A ValueSet given inline in the Parameters body.
    inline = {"resourceType": "ValueSet", "status": "active",
              "compose": {"include": [{"system": GENDER, "concept": [{"code": "other"}]}]}}
    r = await http.post("/ValueSet/$expand", json=params(valueSet=inline))
    assert r.status_code == 200 and r.json()["expansion"]["contains"] == [
        {"system": GENDER, "version": "4.0.1", "code": "other", "display": "Other"}]


async def test_filter_count_offset_page_a_pick_list(http: httpx.AsyncClient) -> None:
    r = await http.get("/ValueSet/$expand", params={"url": DOC_TYPES, "filter": "DISCH", "count": "5"})
    vs = r.json()
    total = vs["expansion"]["total"]
    assert r.status_code == 200 and 5 < total < 6401
    assert len(codes(vs)) == 5
    assert all(any(w.lower().startswith("disch") for w in c["display"].replace("-", " ").split())
               for c in vs["expansion"]["contains"])
    echoed = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in vs["expansion"]["parameter"]}
    assert echoed["filter"] == "DISCH" and echoed["count"] == 5 and echoed["used-codesystem"] == "http://loinc.org"
    # The pages put together are the whole filtered expansion, in order, without repeats.
    seen: list[str] = []
    for offset in range(0, total, 7):
        page = (await http.get("/ValueSet/$expand", params={"url": DOC_TYPES, "filter": "disch", "count": "7",
                                                              "offset": str(offset)})).json()
        assert page["expansion"]["total"] == total and page["expansion"]["offset"] == offset
        seen += codes(page)
    whole = (await http.get("/ValueSet/$expand", params={"url": DOC_TYPES, "filter": "disch"})).json()
    assert seen == codes(whole) and len(seen) == total == len(set(seen))
    # Every word of the filter must start a word of the display (or the code).
    two = (await http.get("/ValueSet/$expand", params={"url": DOC_TYPES, "filter": "disch summ", "count": "50"})).json()
    assert 0 < two["expansion"]["total"] < total
    assert all("summ" in c["display"].lower() for c in two["expansion"]["contains"])
    by_code = (await http.get("/ValueSet/$expand", params={"url": DOC_TYPES, "filter": "18842"})).json()
    assert codes(by_code) == ["18842-5"]
    # A page past the end is empty, with the total still right; a blank filter is no filter.
    past = (await http.get("/ValueSet/$expand", params={"url": GENDER_VS, "offset": "10", "count": "5"})).json()
    assert past["expansion"]["total"] == 4 and "contains" not in past["expansion"]
    blank = (await http.get("/ValueSet/$expand", params={"url": GENDER_VS, "filter": ""})).json()
    assert blank["expansion"]["total"] == 4
    # POST with the paging parameters in the body.
    posted = (await http.post("/ValueSet/$expand",
                              json=params(url=DOC_TYPES, filter="disch", count=7, offset=7))).json()
    assert codes(posted) == seen[7:14]


async def test_filter_matches_korean_words_and_compounds(http: httpx.AsyncClient) -> None:
    r = await http.get("/ValueSet/$expand", params={"url": KR_DEPARTMENTS, "filter": "신경"})
    found = {c["display"] for c in r.json()["expansion"]["contains"]}
    assert {"신경과", "신경외과"} <= found and "정형외과" not in found
    # Korean compounds carry no spaces: a filter matches inside them too (정형외과, 흉부외과 ...).
    surgery = {c["display"] for c in (await http.get(
        "/ValueSet/$expand", params={"url": KR_DEPARTMENTS, "filter": "외과"})).json()["expansion"]["contains"]}
    assert {"외과", "정형외과", "신경외과", "흉부외과"} <= surgery and "내과" not in surgery


async def test_code_system_written_to_the_server_is_used_at_once_with_display_language(
        http: httpx.AsyncClient) -> None:
    await write(http, TRIAGE)
    await write(http, TRIAGE_SET)
    vs = (await http.get("/ValueSet/triage/$expand")).json()
    assert codes(vs) == ["urgent", "immediate", "soon", "routine"]
    assert vs["expansion"]["contains"][0]["display"] == "Urgent"
    ko = (await http.get("/ValueSet/$expand", params={"url": TRIAGE_VS, "displayLanguage": "ko-KR"})).json()
    assert [c["display"] for c in ko["expansion"]["contains"]] == ["긴급", "즉시", "수시간 내", "일반"]
    assert {"name": "displayLanguage", "valueCode": "ko-KR"} in ko["expansion"]["parameter"]
    # Type-ahead works in the asked language (and in the original one).
    assert codes((await http.get("/ValueSet/$expand", params={"url": TRIAGE_VS, "displayLanguage": "ko",
                                                             "filter": "긴"})).json()) == ["urgent"]
    assert codes((await http.get("/ValueSet/$expand", params={"url": TRIAGE_VS, "displayLanguage": "ko",
                                                             "filter": "with"})).json()) == ["soon"]
    header = (await http.get("/ValueSet/triage/$expand", headers={"Accept-Language": "ko-KR,ko;q=0.9"})).json()
    assert header["expansion"]["contains"][0]["display"] == "긴급"
    de = (await http.post("/ValueSet/triage/$expand",
                          json=params(displayLanguage="de", includeDesignations=True))).json()
    first = de["expansion"]["contains"][0]
    assert first["display"] == "Dringend" and {"language": "ko", "value": "긴급"} in first["designation"]
    assert de["expansion"]["contains"][3]["display"] == "Routine"  # no German designation: the display
    # A change to the CodeSystem changes the next expansion (the cache follows the definitions).
    changed = {**TRIAGE, "concept": [*TRIAGE["concept"], {"code": "deferred", "display": "Deferred"}]}
    await write(http, changed)
    assert codes((await http.get("/ValueSet/triage/$expand")).json())[-1] == "deferred"
    # Hierarchy from nesting: subsumption, lookup's parent/child.
    r = await http.get("/CodeSystem/$subsumes", params={"system": TRIAGE_CS, "codeA": "urgent", "codeB": "soon"})
    assert param(r.json(), "outcome") == "subsumes"
    look = (await http.get("/CodeSystem/$lookup", params={"system": TRIAGE_CS, "code": "soon"})).json()
    assert param(look, "name") == "Triage" and param(look, "version") == "1"
    assert param(look, "display") == "Within hours"
    props = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in x["part"]}
             for x in look["parameter"] if x["name"] == "property"]
    assert {"code": "minutes", "value": 240} in props and {"code": "parent", "value": "urgent"} in props
    checked = (await http.post("/Parameters/$validate", json=look)).json()
    assert not [i for i in checked["issue"] if i["severity"] in ("error", "fatal")], checked
    desig = [x["part"] for x in look["parameter"] if x["name"] == "designation"]
    assert desig == [[{"name": "language", "valueCode": "ko"}, {"name": "value", "valueString": "수시간 내"}]]
    ko_look = (await http.get("/CodeSystem/$lookup", params={"system": TRIAGE_CS, "code": "soon",
                                                             "displayLanguage": "ko"})).json()
    assert param(ko_look, "display") == "수시간 내"
    # A designation is an acceptable display.
    ok = (await http.get("/ValueSet/$validate-code", params={"url": TRIAGE_VS, "system": TRIAGE_CS,
                                                            "code": "urgent", "display": "긴급"})).json()
    assert param(ok, "result") is True


async def test_expansion_limits_and_unenumerable_systems(http: httpx.AsyncClient) -> None:
    # LOINC in full is not loaded: a ValueSet of all of LOINC cannot be expanded here.
    msg = issue(await http.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/observation-codes"}),
                422, "not-supported")
    assert "http://loinc.org" in msg
    msg = issue(await http.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/clinical-findings"}),
                422, "not-supported")
    assert "http://snomed.info/sct" in msg


async def test_too_costly_without_count(settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, max_expansion=1000),
                     definitions=Definitions.load(profile_folders(), cache_dir=CACHE_DIR))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://test/fhir") as http:
            msg = issue(await http.get("/ValueSet/c80-doc-typecodes/$expand"), 422, "too-costly")
            assert "6401" in msg and "FHIR_EXCHANGE_MAX_EXPANSION" in msg
            page = (await http.get("/ValueSet/c80-doc-typecodes/$expand", params={"count": "20"})).json()
            assert page["expansion"]["total"] == 6401 and len(codes(page)) == 20
            huge = (await http.get("/ValueSet/c80-doc-typecodes/$expand", params={"count": "5000"})).json()
            assert len(codes(huge)) == 1000  # one page is capped at the limit too
            narrowed = await http.get("/ValueSet/c80-doc-typecodes/$expand", params={"filter": "note"})
            assert narrowed.status_code == 200 and narrowed.json()["expansion"]["total"] < 1000


async def test_expand_errors(http: httpx.AsyncClient) -> None:
    issue(await http.get("/ValueSet/no-such-set/$expand"), 404, "not-found")
    issue(await http.get("/ValueSet/$expand", params={"url": "http://example.org/nothing"}), 404, "not-found")
    issue(await http.get("/ValueSet/$expand"), 400, "invalid")
    issue(await http.get("/ValueSet/$expand", params={"url": GENDER_VS, "count": "-1"}), 400, "invalid")
    issue(await http.get("/ValueSet/$expand", params={"url": GENDER_VS, "offset": "x"}), 400, "invalid")
    issue(await http.get("/ValueSet/administrative-gender/$expand", params={"url": DOC_TYPES}), 400, "invalid")
    issue(await http.get("/ValueSet/$expand", params=[("url", GENDER_VS), ("url", DOC_TYPES)]), 400, "invalid")
    issue(await http.post("/ValueSet/$expand", json={"resourceType": "Patient"}), 400, "invalid")
    issue(await http.post("/ValueSet/$expand", json=params(url=GENDER_VS, valueSet={"resourceType": "ValueSet"})),
          400, "invalid")
    # An inline ValueSet is validated before it is expanded; a malformed Coding is refused.
    broken = {"resourceType": "ValueSet", "status": "active", "compose": {"include": ["not an object"]}}
    r = await http.post("/ValueSet/$expand", json=params(valueSet=broken))
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    bad_coding = params(url=GENDER_VS, coding={"system": 7, "code": "male"})
    issue(await http.post("/ValueSet/$validate-code", json=bad_coding), 400, "invalid")
    # The operations are declared where the spec puts them, and nowhere else.
    issue(await http.get("/Patient/$expand"), 404, "not-supported")
    issue(await http.get("/CodeSystem/v3-ActCode/$lookup?code=AMB"), 404, "not-supported")
    meta = (await http.get("/metadata")).json()
    ops = {t["type"]: {o["name"] for o in t.get("operation", [])} for t in meta["rest"][0]["resource"]}
    assert {"expand", "validate-code"} <= ops["ValueSet"]
    assert {"lookup", "validate-code", "subsumes"} <= ops["CodeSystem"] and "translate" in ops["ConceptMap"]


# -- $lookup, $validate-code, $subsumes ------------------------------------------------------------

async def test_lookup(http: httpx.AsyncClient) -> None:
    r = await http.get("/CodeSystem/$lookup", params={"system": ACT_CODE, "code": "AMB"})
    body = r.json()
    assert r.status_code == 200 and param(body, "display") == "ambulatory"
    assert param(body, "name") == "v3 Code System ActCode" and param(body, "version")
    parents = [x["part"][1]["valueCode"] for x in body["parameter"]
               if x["name"] == "property" and x["part"][0]["valueCode"] == "parent"]
    assert parents == ["_ActEncounterCode"]
    posted = await http.post("/CodeSystem/$lookup", json=params(coding={"system": ACT_CODE, "code": "AMB"},
                                                               property="child"))
    assert param(posted.json(), "display") == "ambulatory"
    assert not [x for x in posted.json()["parameter"] if x["name"] == "property"]  # AMB has no children
    issue(await http.get("/CodeSystem/$lookup", params={"system": ACT_CODE, "code": "NOPE"}), 404, "not-found")
    issue(await http.get("/CodeSystem/$lookup", params={"system": "http://example.org/cs", "code": "x"}), 404,
          "not-found")
    issue(await http.get("/CodeSystem/$lookup", params={"code": "AMB"}), 400, "invalid")
    issue(await http.get("/CodeSystem/$lookup", params={"system": "http://snomed.info/sct", "code": "22298006"}),
          422, "not-supported")
    both = params(code="AMB", system=ACT_CODE, coding={"system": ACT_CODE, "code": "AMB"})
    issue(await http.post("/CodeSystem/$lookup", json=both), 400, "invalid")


async def test_validate_code_in_value_set(http: httpx.AsyncClient) -> None:
    ok = (await http.get("/ValueSet/$validate-code",
                         params={"url": GENDER_VS, "system": GENDER, "code": "male"})).json()
    assert param(ok, "result") is True and param(ok, "display") == "Male" and param(ok, "message") is None
    by_id = (await http.get("/ValueSet/administrative-gender/$validate-code",
                            params={"system": GENDER, "code": "dog"})).json()
    assert param(by_id, "result") is False and "Unknown code" in param(by_id, "message")
    wrong = (await http.get("/ValueSet/$validate-code", params={"url": GENDER_VS, "system": GENDER, "code": "male",
                                                               "display": "Man"})).json()
    assert param(wrong, "result") is False and param(wrong, "display") == "Male"
    assert "'Man'" in param(wrong, "message") and "'Male'" in param(wrong, "message")
    # A code of the system that the ValueSet leaves out.
    out = (await http.post("/ValueSet/$validate-code", json=params(
        url="http://hl7.org/fhir/ValueSet/encounter-status",
        coding={"system": "http://hl7.org/fhir/encounter-status", "code": "nonsense"}))).json()
    assert param(out, "result") is False
    cc = {"coding": [{"system": "http://example.org/x", "code": "1"}, {"system": GENDER, "code": "female"}]}
    assert param((await http.post("/ValueSet/$validate-code", json=params(url=GENDER_VS, codeableConcept=cc))).json(),
                 "result") is True
    issue(await http.get("/ValueSet/$validate-code", params={"url": GENDER_VS}), 400, "invalid")
    issue(await http.get("/ValueSet/$validate-code", params={"system": GENDER, "code": "male"}), 400, "invalid")
    issue(await http.get("/ValueSet/nope/$validate-code", params={"code": "male"}), 404, "not-found")
    issue(await http.get("/ValueSet/$validate-code", params={"url": "http://hl7.org/fhir/ValueSet/observation-codes",
                                                            "system": "http://loinc.org", "code": "1234-5"}),
          422, "not-supported")


async def test_validate_code_in_code_system(http: httpx.AsyncClient) -> None:
    ok = (await http.get("/CodeSystem/$validate-code", params={"url": ACT_CODE, "code": "AMB"})).json()
    assert param(ok, "result") is True and param(ok, "display") == "ambulatory"
    by_id = (await http.post("/CodeSystem/v3-ActCode/$validate-code", json=params(code="NOPE"))).json()
    assert param(by_id, "result") is False and "NOPE" in param(by_id, "message")
    coding = (await http.post("/CodeSystem/$validate-code", json=params(
        coding={"system": ACT_CODE, "code": "AMB", "display": "walking"}))).json()
    assert param(coding, "result") is False and param(coding, "display") == "ambulatory"
    issue(await http.post("/CodeSystem/$validate-code", json=params(url=GENDER, coding={"system": ACT_CODE,
                                                                                       "code": "AMB"})), 400, "invalid")
    issue(await http.get("/CodeSystem/$validate-code", params={"url": "http://example.org/cs", "code": "1"}),
          404, "not-found")
    issue(await http.get("/CodeSystem/$validate-code", params={
        "url": "http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8", "code": "A00"}), 422, "not-supported")


async def test_subsumes_in_a_hierarchical_core_code_system(http: httpx.AsyncClient) -> None:
    async def outcome(a: str, b: str) -> str:
        r = await http.get("/CodeSystem/$subsumes", params={"system": ACT_CODE, "codeA": a, "codeB": b})
        assert r.status_code == 200, r.text
        return str(param(r.json(), "outcome"))

    assert await outcome("_ActEncounterCode", "AMB") == "subsumes"
    assert await outcome("AMB", "_ActEncounterCode") == "subsumed-by"
    assert await outcome("AMB", "AMB") == "equivalent"
    assert await outcome("AMB", "EMER") == "not-subsumed"
    posted = await http.post("/CodeSystem/v3-ActCode/$subsumes", json=params(
        codingA={"system": ACT_CODE, "code": "_ActEncounterCode"}, codingB={"system": ACT_CODE, "code": "IMP"}))
    assert param(posted.json(), "outcome") == "subsumes"
    issue(await http.get("/CodeSystem/$subsumes", params={"system": ACT_CODE, "codeA": "AMB", "codeB": "NOPE"}),
          400, "code-invalid")
    issue(await http.get("/CodeSystem/$subsumes", params={"system": ACT_CODE, "codeA": "AMB"}), 400, "invalid")
    issue(await http.post("/CodeSystem/$subsumes", json=params(codingA={"system": ACT_CODE, "code": "AMB"},
                                                              codingB={"system": GENDER, "code": "male"})),
          400, "invalid")
    issue(await http.get("/CodeSystem/$subsumes", params={"system": "http://example.org/cs", "codeA": "a",
                                                         "codeB": "b"}), 404, "not-found")


# -- $translate ------------------------------------------------------------------------------------

async def test_translate_with_core_and_written_concept_maps(http: httpx.AsyncClient) -> None:
    core = (await http.get("/ConceptMap/$translate", params={
        "url": "http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2", "system": GENDER,
        "code": "female"})).json()
    assert param(core, "result") is True
    match = param(core, "match")
    assert {"name": "equivalence", "valueCode": "equal"} in match
    assert {"name": "concept", "valueCoding": {"system": "http://terminology.hl7.org/CodeSystem/v2-0001",
                                               "code": "F"}} in match
    # Without a map: every loaded map from that system (v2 and v3 gender maps).
    every = (await http.get("/ConceptMap/$translate", params={"system": GENDER, "code": "male"})).json()
    sources = {p["valueUri"] for m in every["parameter"] if m["name"] == "match" for p in m["part"]
               if p["name"] == "source"}
    assert {"http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v2",
            "http://hl7.org/fhir/ConceptMap/cm-administrative-gender-v3"} <= sources
    only_v3 = (await http.get("/ConceptMap/$translate", params={
        "system": GENDER, "code": "male", "targetsystem": "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender"}
    )).json()
    assert len([m for m in only_v3["parameter"] if m["name"] == "match"]) == 1

    cm: dict[str, Any] = {"resourceType": "ConceptMap", "id": "triage-to-kr", "url": "http://example.kr/fhir/ConceptMap/triage",
          "status": "active", "sourceUri": TRIAGE_VS, "targetUri": "http://example.kr/fhir/ValueSet/ktas",
          "group": [{"source": TRIAGE_CS, "target": "http://example.kr/ktas", "element": [
              {"code": "immediate", "target": [{"code": "1", "display": "소생", "equivalence": "equivalent"}]},
              {"code": "soon", "target": [{"code": "3", "equivalence": "wider"}]},
              {"code": "routine", "target": [{"equivalence": "unmatched"}]}],
              "unmapped": {"mode": "fixed", "code": "5", "display": "비응급"}}]}
    await write(http, cm)
    r = (await http.post("/ConceptMap/triage-to-kr/$translate", json=params(
        coding={"system": TRIAGE_CS, "code": "immediate"}))).json()
    assert param(r, "result") is True
    assert {"name": "concept", "valueCoding": {"system": "http://example.kr/ktas", "code": "1", "display": "소생"}} \
        in param(r, "match")
    unmatched = (await http.get("/ConceptMap/$translate", params={"url": cm["url"], "system": TRIAGE_CS,
                                                                 "code": "routine"})).json()
    assert param(unmatched, "result") is False and "routine" in param(unmatched, "message")
    fixed = (await http.get("/ConceptMap/$translate", params={"source": TRIAGE_VS, "system": TRIAGE_CS,
                                                             "code": "urgent"})).json()
    assert param(fixed, "result") is True and param(fixed, "match")[1]["valueCoding"]["code"] == "5"
    back = (await http.get("/ConceptMap/triage-to-kr/$translate", params={
        "system": "http://example.kr/ktas", "code": "3", "reverse": "true"})).json()
    assert {"name": "equivalence", "valueCode": "narrower"} in param(back, "match")
    assert {"name": "concept", "valueCoding": {"system": TRIAGE_CS, "code": "soon"}} in param(back, "match")
    none = (await http.get("/ConceptMap/$translate", params={"system": "http://example.org/x", "code": "1"})).json()
    assert param(none, "result") is False
    issue(await http.get("/ConceptMap/nope/$translate", params={"system": GENDER, "code": "male"}), 404, "not-found")
    issue(await http.get("/ConceptMap/$translate", params={"system": GENDER}), 400, "invalid")
    issue(await http.get("/ConceptMap/$translate", params={"reverse": "maybe", "code": "1"}), 400, "invalid")


async def test_odd_input_is_never_a_server_error(http: httpx.AsyncClient) -> None:
    odd_bodies: list[Any] = [
        [], "text", {"resourceType": "Parameters", "parameter": "x"},
        {"resourceType": "Parameters", "parameter": [{"name": 3}]},
        {"resourceType": "Parameters", "parameter": [{"name": "url", "valueInteger": 4}]},
        {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"code": ["a"]}}]},
        {"resourceType": "Parameters", "parameter": [{"name": "codeableConcept", "valueCodeableConcept": {}}]},
        {"resourceType": "Parameters", "parameter": [{"name": "count", "valueDecimal": 1.5}]},
        {"resourceType": "Parameters", "parameter": [{"name": "codeSystem", "resource": {"resourceType": "CodeSystem",
                                                                                          "concept": [7]}}]},
        {"resourceType": "Parameters", "parameter": [{"name": "conceptMap", "resource": {"resourceType": "ConceptMap",
                                                                                          "group": "x"}}]},
    ]
    paths = ["/ValueSet/$expand", "/ValueSet/$validate-code", "/CodeSystem/$validate-code", "/CodeSystem/$lookup",
             "/CodeSystem/$subsumes", "/ConceptMap/$translate"]
    for path in paths:
        for body in odd_bodies:
            r = await http.post(path, json=body)
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        for query in ({"url": "%%%"}, {"code": ""}, {"system": "|", "code": "|"}, {"coding": "|"},
                      {"filter": "\x00"}, {"count": "99999999999"}, {"reverse": "yes"}):
            r = await http.get(path, params=query)
            assert r.status_code < 500, (path, query, r.status_code, r.text)


async def test_compose_filters_on_the_hierarchy_and_properties(http: httpx.AsyncClient) -> None:
    await write(http, TRIAGE)

    async def members(*filters: dict[str, str]) -> list[str]:
        vs = {"resourceType": "ValueSet", "status": "active",
              "compose": {"include": [{"system": TRIAGE_CS, "filter": list(filters)}]}}
        r = await http.post("/ValueSet/$expand", json=params(valueSet=vs))
        assert r.status_code == 200, r.text
        return codes(r.json())

    assert await members({"property": "concept", "op": "is-a", "value": "urgent"}) == ["urgent", "immediate", "soon"]
    assert await members({"property": "concept", "op": "descendent-of", "value": "urgent"}) == ["immediate", "soon"]
    assert await members({"property": "concept", "op": "is-not-a", "value": "urgent"}) == ["routine"]
    assert await members({"property": "concept", "op": "generalizes", "value": "soon"}) == ["urgent", "soon"]
    assert await members({"property": "concept", "op": "in", "value": "soon,routine"}) == ["soon", "routine"]
    assert await members({"property": "concept", "op": "not-in", "value": "soon,routine"}) == ["urgent", "immediate"]
    assert await members({"property": "code", "op": "regex", "value": "[a-s].*e"}) == ["immediate", "routine"]
    assert await members({"property": "minutes", "op": "exists", "value": "true"}) == ["soon"]
    assert await members({"property": "minutes", "op": "=", "value": "240"}) == ["soon"]
    assert await members({"property": "concept", "op": "is-a", "value": "urgent"},
                         {"property": "minutes", "op": "exists", "value": "false"}) == ["urgent", "immediate"]
