"""End-to-end search over HTTP on the embedded store (https://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    r = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert r.status_code in (200, 201), r.text


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


@pytest.fixture
async def data(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put(client, {"resourceType": "Organization", "id": "org1", "name": "Seoul University Hospital"})
    await put(client, {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-05-01",
                       "name": [{"family": "Müller", "given": ["Jörg"]}], "managingOrganization":
                       {"reference": "Organization/org1"},
                       "identifier": [{"system": "urn:mrn", "value": "123"}]})
    await put(client, {"resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "1985",
                       "name": [{"family": "김", "given": ["민준"]}]})
    await put(client, {"resourceType": "Patient", "id": "p3", "gender": "female", "birthDate": "2001-02-03",
                       "name": [{"family": "Muller"}], "active": True})
    for i, (pid, code, value, when) in enumerate([("p1", "8480-6", 120, "2024-01-01T10:00:00+09:00"),
                                                  ("p1", "8462-4", 80, "2024-01-02"),
                                                  ("p2", "8480-6", 150, "2023-06-01T00:00:00Z")]):
        await put(client, {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "BP"}]},
                           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
                           "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                             "code": "mm[Hg]"}})
    return client


async def search(client: httpx.AsyncClient, url: str, status: int = 200, **kw: Any) -> dict[str, Any]:
    r = await client.get(url, **kw)
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_string_accent_and_hangul(data: httpx.AsyncClient) -> None:
    assert sorted(ids(await search(data, "/Patient?name=muller"))) == ["p1", "p3"]
    assert ids(await search(data, "/Patient?name:exact=Müller")) == ["p1"]
    assert ids(await search(data, "/Patient?family=김")) == ["p2"]
    assert ids(await search(data, "/Patient?given:contains=민")) == ["p2"]
    assert ids(await search(data, "/Patient?name:contains=ull&gender=female")) == ["p3"]


async def test_token_date_number(data: httpx.AsyncClient) -> None:
    assert ids(await search(data, "/Patient?identifier=urn:mrn|123")) == ["p1"]
    assert ids(await search(data, "/Patient?identifier=|123")) == []
    assert ids(await search(data, "/Patient?gender:not=female")) == ["p1"]
    assert ids(await search(data, "/Patient?birthdate=1985")) == ["p2"]
    # 1985 (the whole year) extends above June 1985: ge matches it (search.html#prefix).
    assert ids(await search(data, "/Patient?birthdate=ge1985-06")) == ["p2", "p3"]
    assert ids(await search(data, "/Patient?birthdate=sa1985-06")) == ["p3"]
    assert sorted(ids(await search(data, "/Observation?date=2024-01-01"))) == ["o0"]
    assert ids(await search(data, "/Observation?value-quantity=gt130")) == ["o2"]
    assert ids(await search(data, "/Observation?value-quantity=120|http://unitsofmeasure.org|mm[Hg]")) == ["o0"]
    assert ids(await search(data, "/Observation?code-value-quantity=http://loinc.org|8480-6$lt130")) == ["o0"]
    assert ids(await search(data, "/Patient?active:missing=false")) == ["p3"]


async def test_chain_has_include(data: httpx.AsyncClient) -> None:
    assert ids(await search(data, "/Observation?subject:Patient.name=kim")) == []
    assert ids(await search(data, "/Observation?subject:Patient.family=김")) == ["o2"]
    assert sorted(ids(await search(data, "/Observation?patient.organization.name=seoul"))) == ["o0", "o1"]
    assert ids(await search(data, "/Patient?_has:Observation:patient:code=8462-4")) == ["p1"]
    b = await search(data, "/Observation?code=8480-6&_include=Observation:subject&_sort=date")
    assert ids(b) == ["o2", "o0"] and sorted(ids(b, "include")) == ["p1", "p2"]
    b = await search(data, "/Patient?_id=p1&_revinclude=Observation:subject&_include=Patient:organization")
    assert ids(b) == ["p1"] and sorted(ids(b, "include")) == ["o0", "o1", "org1"]
    b = await search(data, "/Observation?_id=o0&_include=Observation:patient&_include:iterate=Patient:organization")
    assert sorted(ids(b, "include")) == ["org1", "p1"]


async def test_compartment_and_system(data: httpx.AsyncClient) -> None:
    assert sorted(ids(await search(data, "/Patient/p1/Observation"))) == ["o0", "o1"]
    assert ids(await search(data, "/Patient/p1/Observation?code=8462-4")) == ["o1"]
    b = await search(data, "/?_type=Patient,Organization&_id=p2,org1")
    assert sorted(ids(b)) == ["org1", "p2"]


async def test_result_control(data: httpx.AsyncClient) -> None:
    b = await search(data, "/Patient?_sort=-birthdate&_count=2")
    assert ids(b) == ["p3", "p2"] and b["total"] == 3
    links = {lk["relation"]: lk["url"] for lk in b["link"]}
    nxt = links["next"].split("/fhir", 1)[1]
    assert ids(await search(data, nxt)) == ["p1"]
    assert "total" not in await search(data, "/Patient?_total=none")
    b = await search(data, "/Patient?_summary=count")
    assert b["total"] == 3 and "entry" not in b
    b = await search(data, "/Patient?_elements=gender&_id=p1")
    assert set(b["entry"][0]["resource"]) == {"resourceType", "id", "meta", "gender"}
    b = await search(data, "/Patient?foo=bar&gender=male")
    assert ids(b) == ["p1"] and "foo" not in b["link"][0]["url"]


async def test_errors(data: httpx.AsyncClient) -> None:
    for url, name in [("/Patient?birthdate=2020-13", "birthdate"), ("/Patient?name:foo=x", "name:foo"),
                      ("/Patient?_sort=nope", "_sort"), ("/Observation?value-quantity=abc", "value-quantity"),
                      ("/Observation?subject.nope=1", "subject.nope")]:
        b = await search(data, url, 400)
        assert b["resourceType"] == "OperationOutcome" and b["issue"][0]["expression"] == [name], url
    b = await search(data, "/Patient?foo=bar", 400, headers={"Prefer": "handling=strict"})
    assert b["issue"][0]["expression"] == ["foo"]


async def test_post_search_and_reindex(data: httpx.AsyncClient) -> None:
    r = await data.post("/Patient/_search", content="gender=female",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and sorted(ids(r.json())) == ["p2", "p3"]
    sp = {"resourceType": "SearchParameter", "id": "patient-mrn", "url": "http://example.org/sp/mrn",
          "name": "mrn", "status": "active", "description": "MRN value", "code": "mrn", "base": ["Patient"],
          "type": "token", "expression": "Patient.identifier.where(system='urn:mrn').value"}
    r = await data.put("/SearchParameter/patient-mrn", json=sp, headers=FHIR_JSON)
    assert r.status_code in (200, 201), r.text
    r = await data.post("/$reindex")
    assert r.status_code == 200, r.text
    assert ids(await search(data, "/Patient?mrn=123")) == ["p1"]


async def test_capability_statement(client: httpx.AsyncClient) -> None:
    cs = (await client.get("/metadata")).json()
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient["searchParam"]}
    assert {"name", "birthdate", "identifier", "_id", "_lastUpdated", "_has"} <= names
    assert {"_text", "_content"} <= names and "near" not in names  # near is a Location parameter
    location = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Location")
    near = next(p for p in location["searchParam"] if p["name"] == "near")
    assert near["type"] == "special"
    assert "_content" in {p["name"] for p in location["searchParam"]}
    assert "Patient:organization" in patient["searchInclude"]


@pytest.fixture
async def texts(client: httpx.AsyncClient) -> httpx.AsyncClient:
    def narrative(div: str) -> dict[str, str]:
        return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{div}</div>'}

    await put(client, {"resourceType": "Patient", "id": "t1", "text": narrative(
        "<p>Blood <b>Pres</b>sure&#160;high</p><table><tr><td>Élodie</td><td>M&amp;M</td></tr></table>"),
        "name": [{"family": "Kowalski"}]})
    await put(client, {"resourceType": "Patient", "id": "t2", "text": narrative("<p>김민준 환자</p><!-- hidden -->"),
                       "name": [{"family": "Lee", "given": ["Zoë"]}], "gender": "female"})
    await put(client, {"resourceType": "Observation", "id": "t3", "status": "final",
                       "code": {"text": "Heart rate", "coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                       "note": [{"text": "Patient présente une tachycardie"}]})
    return client


async def test_text_searches_the_narrative_by_word(texts: httpx.AsyncClient) -> None:
    assert ids(await search(texts, "/Patient?_text=pressure")) == ["t1"]  # <b>Pres</b>sure is one word
    assert ids(await search(texts, "/Patient?_text=PRES")) == ["t1"]
    assert ids(await search(texts, "/Patient?_text=elodie")) == ["t1"]  # accents folded
    assert ids(await search(texts, "/Patient?_text=high")) == ["t1"]  # &#160; separates words
    assert ids(await search(texts, "/Patient?_text=m")) == ["t1"]  # "M&amp;M": the words M and M
    assert ids(await search(texts, "/Patient?_text=김민")) == ["t2"]  # Hangul prefix
    assert ids(await search(texts, "/Patient?_text:contains=민준")) == ["t2"]
    assert ids(await search(texts, "/Patient?_text:exact=Élodie")) == ["t1"]
    assert ids(await search(texts, "/Patient?_text:exact=élodie")) == []
    assert ids(await search(texts, "/Patient?_text=hidden")) == []  # comments are not text
    assert ids(await search(texts, "/Patient?_text=kowalski")) == []  # names are not narrative
    assert ids(await search(texts, "/Patient?_text=div")) == []  # markup is not text
    assert ids(await search(texts, "/Patient?_text=blood%20pressure")) == []  # one word per value
    assert ids(await search(texts, "/Patient?_text=blood&_text=pres")) == ["t1"]
    assert ids(await search(texts, "/Patient?_text:missing=true")) == []
    assert ids(await search(texts, "/Observation?_text:missing=true")) == ["t3"]
    b = await search(texts, "/Patient?_text=", 400)
    assert b["issue"][0]["expression"] == ["_text"]


async def test_content_searches_all_string_values(texts: httpx.AsyncClient) -> None:
    assert ids(await search(texts, "/Patient?_content=kowal")) == ["t1"]
    assert ids(await search(texts, "/Patient?_content=zoe")) == ["t2"]
    assert ids(await search(texts, "/Patient?_content=female")) == ["t2"]  # codes are content
    assert ids(await search(texts, "/Observation?_content=presente")) == ["t3"]
    assert ids(await search(texts, "/Observation?_content:contains=chycard")) == ["t3"]
    assert ids(await search(texts, "/Observation?_content=heart&_content=rate")) == ["t3"]
    assert ids(await search(texts, "/Observation?_content=loinc")) == []  # system URIs are not content
    assert ids(await search(texts, "/Observation?_content=observation")) == []  # nor is resourceType
    assert ids(await search(texts, "/Patient?_content=pressure")) == []  # nor the narrative
    assert ids(await search(texts, "/Observation?_content=8867")) == ["t3"]


@pytest.fixture
async def places(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for lid, lat, lon in [("seoul", 37.5665, 126.9780), ("incheon", 37.4563, 126.7052),
                          ("busan", 35.1796, 129.0756), ("fiji", -17.7134, 178.065),
                          ("samoa", -13.759, -172.1046)]:
        await put(client, {"resourceType": "Location", "id": lid, "name": lid,
                           "position": {"latitude": lat, "longitude": lon}})
    await put(client, {"resourceType": "Location", "id": "nowhere", "name": "nowhere"})
    return client


async def test_near_within_the_radius(places: httpx.AsyncClient) -> None:
    # Seoul to Incheon is about 27 km, to Busan about 325 km.
    assert ids(await search(places, "/Location?near=37.5665|126.9780|10|km")) == ["seoul"]
    assert ids(await search(places, "/Location?near=37.5665|126.9780|30|km")) == ["seoul", "incheon"]
    assert ids(await search(places, "/Location?near=37.5665|126.9780|30")) == ["seoul", "incheon"]
    assert ids(await search(places, "/Location?near=37.5665|126.9780")) == ["seoul", "incheon"]  # 50 km
    assert ids(await search(places, "/Location?near=37.5665|126.9780|26000|m")) == ["seoul"]
    assert ids(await search(places, "/Location?near=37.5665|126.9780|28000|m")) == ["seoul", "incheon"]
    assert ids(await search(places, "/Location?near=37.5665|126.9780|200|[mi_i]")) == ["seoul", "incheon"]
    assert ids(await search(places, "/Location?near=37.5665|126.9780|210|[mi_i]")) == [
        "seoul", "incheon", "busan"]
    # Across the antimeridian: Fiji to Samoa is about 1,150 km.
    assert ids(await search(places, "/Location?near=-17.7134|178.065|1200|km")) == ["fiji", "samoa"]
    assert ids(await search(places, "/Location?near=-13.759|-172.1046|1000|km")) == ["samoa"]
    assert ids(await search(places, "/Location?near=35.1796|129.0756|1,-17.7134|178.065|1")) == ["busan", "fiji"]
    assert ids(await search(places, "/Location?near=35.1796|129.0756|1&name=seoul")) == []
    assert ids(await search(places, "/Location?near:missing=true")) == ["nowhere"]
    assert ids(await search(places, "/Location?near=90|0|10")) == []


async def test_near_malformed(places: httpx.AsyncClient) -> None:
    for value in ["37.5", "abc|126", "37.5|126|ten", "37.5|126|10|furlong", "91|0", "0|181|1",
                  "37.5|126|-1", "1|2|3|km|x", "nan|0"]:
        b = await search(places, f"/Location?near={value}", 400)
        assert b["issue"][0]["expression"] == ["near"], value
    b = await search(places, "/Location?_sort=near", 400)
    assert b["issue"][0]["expression"] == ["_sort"]
