"""``_filter`` searches over HTTP (https://hl7.org/fhir/R4/search_filter.html), on SQLite and on MongoDB
(``MONGODB_URL`` or the session's SecantusDB, tests/mongo_server.py): each filter gives what the
equivalent plain searches give (``gender eq female`` = ``gender=female``; ``a or b`` = the union of the
two searches; ``a and b`` = their intersection; ``not (a)`` = the complement within the type), the issue's
examples, chains, string modes, ``_filter`` ANDed with other parameters, errors and lenient handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures
from tests.store.test_search_http import put

PATIENTS: list[dict[str, Any]] = [
    {"id": "p1", "gender": "female", "birthDate": "1992-03-04", "active": True,
     "name": [{"family": "Peterson", "given": ["Anna"]}]},
    {"id": "p2", "gender": "male", "birthDate": "1985-07-01", "name": [{"family": "Kim", "given": ["Minjun"]}]},
    {"id": "p3", "gender": "female", "birthDate": "1970", "active": False,
     "name": [{"family": "Müller", "given": ["Petra"]}]},
    {"id": "p4", "gender": "other", "name": [{"family": "김", "given": ["민준"]}],
     "identifier": [{"system": "urn:mrn", "value": "a,b"}]},
    {"id": "p5", "birthDate": "2001-01-01", "name": [{"family": "Kimball"}]},
    {"id": "p6", "gender": "male", "birthDate": "1990-01-01", "active": True},
]
# Laboratory codes (LOINC glucose, hemoglobin, sodium), not vital signs: no vital-signs profile applies.
OBSERVATIONS: list[tuple[str, str, str, str, float]] = [  # id, subject, status, code, value
    ("o1", "p1", "final", "2345-7", 120), ("o2", "p2", "preliminary", "2345-7", 150),
    ("o3", "p2", "final", "718-7", 80), ("o4", "p3", "amended", "718-7", 95.5),
    ("o5", "p5", "final", "2951-2", 70),
]


@pytest.fixture(params=["sqlite", "mongodb"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = "" if request.param == "sqlite" else request.getfixturevalue("wiped_db_url")
    return Settings(data_dir=tmp_path, store_url=url, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024,
                    auth=False)


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for p in PATIENTS:
        await put(client, {"resourceType": "Patient", **p})
    for oid, subject, status, code, value in OBSERVATIONS:
        await put(client, {"resourceType": "Observation", "id": oid, "status": status,
                           "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                           "subject": {"reference": f"Patient/{subject}"},
                           "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                             "code": "mg/dL"}})
    return client


async def found(client: httpx.AsyncClient, url: str, **kw: Any) -> set[str]:
    r = await client.get(url + ("&" if "?" in url else "?") + "_count=100", **kw)
    assert r.status_code == 200, (url, r.text)
    body = r.json()
    got = {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"}
    assert body["total"] == len(got)
    return got


def f(expr: str) -> str:
    return "_filter=" + quote(expr, safe="")


# (type, filter, the same as plain parameters)
EQUIVALENT: list[tuple[str, str, str]] = [
    ("Patient", "gender eq female", "gender=female"),
    ("Patient", "gender ne female", "gender:not=female"),
    ("Patient", 'name co "pet"', "name:contains=pet"),
    ("Patient", 'family sw "kim"', "family=kim"),
    ("Patient", "birthdate ge 1990-01-01", "birthdate=ge1990-01-01"),
    ("Patient", "birthdate lt 1990", "birthdate=lt1990"),
    ("Patient", "birthdate eb 1990", "birthdate=eb1990"),
    ("Patient", "active pr true", "active:missing=false"),
    ("Patient", "active pr false", "active:missing=true"),
    ("Patient", "_id ne p1", "_id:not=p1"),
    ("Patient", 'identifier eq "urn:mrn|a,b"', "identifier=urn:mrn|a%5C,b"),
    ("Observation", "value-quantity gt 90", "value-quantity=gt90"),
    ("Observation", 'value-quantity le "95.5|http://unitsofmeasure.org|mg/dL"',
     "value-quantity=le95.5|http://unitsofmeasure.org|mg/dL"),
    ("Observation", "code eq http://loinc.org|2345-7", "code=http://loinc.org|2345-7"),
    ("Observation", "subject eq Patient/p2", "subject=Patient/p2"),
    ("Observation", "subject.gender eq female", "subject:Patient.gender=female"),
    ("Observation", 'subject.name co "pet"', "subject:Patient.name:contains=pet"),
    ("Observation", "status eq final", "status=final"),
]


async def test_each_comparison_equals_its_plain_parameter(data: httpx.AsyncClient) -> None:
    for type, expr, plain in EQUIVALENT:
        want = await found(data, f"/{type}?{plain}")
        assert await found(data, f"/{type}?{f(expr)}") == want, expr
    # and the expected sets are not trivial (the comparisons above could fail)
    assert await found(data, "/Patient?" + f("gender eq female")) == {"p1", "p3"}
    assert await found(data, "/Observation?" + f("subject.gender eq female")) == {"o1", "o4"}


async def test_or_and_not_are_union_intersection_complement(data: httpx.AsyncClient) -> None:
    pairs = [(t, e, p) for t, e, p in EQUIVALENT]
    everything = {t: await found(data, f"/{t}") for t in ("Patient", "Observation")}
    for (t1, e1, p1), (t2, e2, p2) in zip(pairs, pairs[1:] + pairs[:1], strict=True):
        if t1 != t2:
            continue
        a, b = await found(data, f"/{t1}?{p1}"), await found(data, f"/{t1}?{p2}")
        assert await found(data, f"/{t1}?" + f(f"{e1} or {e2}")) == a | b, (e1, e2)
        assert await found(data, f"/{t1}?" + f(f"{e1} and {e2}")) == a & b, (e1, e2)
        assert await found(data, f"/{t1}?" + f(f"not ({e1})")) == everything[t1] - a, e1
        assert await found(data, f"/{t1}?" + f(f"not ({e1} or {e2})")) == everything[t1] - (a | b), (e1, e2)


async def test_the_issue_examples_and_string_modes(data: httpx.AsyncClient) -> None:
    expr = 'name co "pet" and (gender eq female or birthdate ge 1990-01-01)'
    assert await found(data, "/Patient?" + f(expr)) == {"p1", "p3"}
    assert await found(data, "/Patient?" + f('name co "pet" and (gender eq male or birthdate ge 1990-01-01)')) == {"p1"}
    assert await found(data, "/Observation?" + f('subject.name eq "Kim"')) == {"o2", "o3"}
    assert await found(data, "/Observation?" + f("not (status eq final)")) == {"o2", "o4"}
    # precedence: not > and > or
    or_and = "gender eq male or gender eq female and active eq true"
    assert await found(data, "/Patient?" + f(or_and)) == {"p1", "p2", "p6"}
    assert await found(data, "/Patient?" + f("(gender eq male or gender eq female) and active eq true")) == {"p1", "p6"}
    # string eq: the whole normalised (case- and accent-folded) text; a prefix is not enough
    assert await found(data, "/Patient?" + f('family eq "kim"')) == {"p2"}
    assert await found(data, "/Patient?" + f('family eq "MULLER"')) == {"p3"}
    assert await found(data, "/Patient?" + f('family ew "son"')) == {"p1"}
    assert await found(data, "/Patient?" + f('given ew "준"')) == {"p4"}
    assert await found(data, "/Patient?" + f('family ne "kim"')) == {"p1", "p3", "p4", "p5", "p6"}
    assert await found(data, "/Observation?" + f('subject.family ew "ball"')) == {"o5"}


async def test_filter_is_anded_with_other_parameters(data: httpx.AsyncClient) -> None:
    assert await found(data, "/Patient?gender=female&" + f("active eq true or birthdate lt 1980")) == {"p1", "p3"}
    assert await found(data, "/Patient?gender=male&" + f("active eq true or birthdate lt 1980")) == {"p6"}
    two = "/Patient?" + f("gender eq male") + "&" + f("active eq true")
    assert await found(data, two) == {"p6"}
    r = await data.get("/Patient?" + f("gender eq male") + "&_sort=-birthdate&_count=1")
    body = r.json()
    assert [e["resource"]["id"] for e in body["entry"]] == ["p6"] and body["total"] == 2
    assert any("_filter=gender" in link["url"] for link in body["link"] if link["relation"] == "self")
    # POST _search takes it as a form field like any parameter
    r = await data.post("/Patient/_search", content="_filter=" + quote("not (gender pr true)"),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and {e["resource"]["id"] for e in r.json()["entry"]} == {"p5"}


async def test_errors_are_400_operation_outcomes(data: httpx.AsyncClient) -> None:
    cases = [
        ("gender eq female and", 400, "at position 21: expected a parameter name"),
        ("nosuch eq 1", 400, "Unknown or unsupported search parameter 'nosuch' in _filter at position 1"),
        ("name lt x", 400, "the operator 'lt' is not supported on the string parameter 'name'"),
        ("(" * 50 + "gender eq male" + ")" * 50, 400, "max_filter_depth"),
    ]
    for expr, status, text in cases:
        r = await data.get("/Patient?" + f(expr))
        assert r.status_code == status, r.text
        issue = r.json()["issue"][0]
        assert r.json()["resourceType"] == "OperationOutcome" and text in issue["diagnostics"], issue
    # an unknown parameter: dropped only when the client asks for lenient handling
    r = await data.get("/Patient?gender=male&" + f("nosuch eq 1"), headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200 and {e["resource"]["id"] for e in r.json()["entry"]} == {"p2", "p6"}
    assert all("_filter" not in link["url"] for link in r.json()["link"])
    r = await data.get("/Patient?" + f("nosuch eq 1"), headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)  # the statement does not depend on the store
async def test_capability_statement_declares_filter(client: httpx.AsyncClient) -> None:
    body = (await client.get("/metadata")).json()
    rest = body["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert any(p["name"] == "_filter" for p in patient["searchParam"])
    assert any(p["name"] == "_filter" for p in rest.get("searchParam", []))
