"""Hypothesis properties over HTTP: round trips, and that no input yields a 500 or harms stored data."""

from __future__ import annotations

import json
import string
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# FHIR string: non-empty, no control characters, no leading/trailing whitespace.
# (Other Unicode spaces are left out: whether the spec's \\S admits U+00A0 is the validator's call.)
fhir_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs")) | st.just(" "),
                    min_size=1, max_size=30).map(str.strip).filter(bool)
code_token = st.text(string.ascii_letters + string.digits + "-.", min_size=1, max_size=12)
fhir_date = st.dates().filter(lambda d: d.year >= 1000).map(lambda d: d.isoformat())
decimal = st.integers(-10**9, 10**9).map(lambda n: n / 100)
identifier = st.fixed_dictionaries({"system": st.just("urn:oid:1.2.410.9"), "value": fhir_text})
human_name = st.fixed_dictionaries({}, optional={"family": fhir_text, "given": st.lists(fhir_text, min_size=1,
                                                                                       max_size=3),
                                                 "use": st.sampled_from(["usual", "official", "nickname"])}
                                   ).filter(bool)

patients = st.fixed_dictionaries(
    {"resourceType": st.just("Patient")},
    optional={"active": st.booleans(), "gender": st.sampled_from(["male", "female", "other", "unknown"]),
              "birthDate": fhir_date, "name": st.lists(human_name, min_size=1, max_size=3),
              "identifier": st.lists(identifier, min_size=1, max_size=3),
              "deceasedBoolean": st.booleans(),
              "telecom": st.lists(st.fixed_dictionaries({"system": st.just("phone"), "value": fhir_text}),
                                  min_size=1, max_size=2)},
).filter(lambda d: len(d) > 1)
observations = st.fixed_dictionaries(
    {"resourceType": st.just("Observation"),
     "status": st.sampled_from(["registered", "preliminary", "final", "amended", "cancelled"]),
     "code": st.fixed_dictionaries({"coding": st.just([{"system": "http://loinc.org", "code": "8867-4"}])},
                                   optional={"text": fhir_text})},
    optional={"valueQuantity": st.fixed_dictionaries({"value": decimal}, optional={"unit": fhir_text}),
              "valueString": fhir_text, "effectiveDateTime": fhir_date,
              "note": st.lists(st.fixed_dictionaries({"text": fhir_text}), min_size=1, max_size=2)},
).filter(lambda d: not ("valueQuantity" in d and "valueString" in d))
organizations = st.fixed_dictionaries(
    {"resourceType": st.just("Organization"), "name": fhir_text},
    optional={"active": st.booleans(), "alias": st.lists(fhir_text, min_size=1, max_size=3),
              "identifier": st.lists(identifier, min_size=1, max_size=2)},
)
resources = st.one_of(patients, observations, organizations)


def without_server_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("id", "meta")}


@SETTINGS
@given(resource=resources)
async def test_created_resources_read_back_equal(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    created = await client.post(f"/{resource['resourceType']}", json=resource)
    assert created.status_code == 201, created.text
    read = await client.get(created.headers["location"].rsplit("/_history", 1)[0])
    assert read.status_code == 200
    assert without_server_meta(read.json()) == resource
    assert read.json() == created.json()


# -- nothing a client sends yields a 500 or harms stored data ----------------------------------------------

SEED = {"resourceType": "Patient", "id": "seed", "gender": "female", "name": [{"family": "Seed"}]}


async def seed(client: httpx.AsyncClient) -> tuple[bytes, int]:
    """The seed Patient's current body and history length (created on first use)."""
    got = await client.get("/Patient/seed")
    if got.status_code == 404:
        await client.put("/Patient/seed", json=SEED)
        got = await client.get("/Patient/seed")
    assert got.status_code == 200
    total = (await client.get("/Patient/seed/_history")).json()["total"]
    return got.content, total


async def assert_seed_intact(client: httpx.AsyncClient, before: tuple[bytes, int], status: int) -> None:
    """Version 1 never changes; a refused request (4xx) changed nothing at all. A request that was
    accepted (a valid PATCH ``[]`` or PUT of the seed) may add a version: that is no harm."""
    v1 = (await client.get("/Patient/seed/_history/1")).json()
    assert {k: v for k, v in v1.items() if k != "meta"} == SEED
    after = await seed(client)
    if status >= 400:
        assert after == before, status


content_types = st.sampled_from([None, "application/fhir+json", "application/json", "application/json-patch+json",
                                 "application/x-www-form-urlencoded", "application/fhir+xml", "text/plain",
                                 "multipart/form-data", "application/fhir+json; charset=latin-1", "garbage/;;"])
json_ish = st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["resourceType", "id", "meta", "gender", "name", "text", "contained"]),
                    st.one_of(st.just("Patient"), st.just("seed"), st.integers(), st.none(), st.text(max_size=5),
                              st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                   st.integers(), max_size=2)),
                    max_size=5).map(lambda v: json.dumps(v).encode()),
)


async def _bodies(client: httpx.AsyncClient, method: str, path: str, body: bytes, ctype: str | None) -> None:
    before = await seed(client)
    headers = {"content-type": ctype} if ctype else {}
    resp = await client.request(method, path, content=body, headers=headers)
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        if resp.headers["content-type"].startswith("application/fhir+xml"):  # an XML request's answer
            assert resp.content.startswith(b"<?xml") and b"<OperationOutcome" in resp.content
        else:
            assert resp.json()["resourceType"] == "OperationOutcome"
    await assert_seed_intact(client, before, resp.status_code)


body_cases = dict(method=st.sampled_from(["POST", "PUT", "PATCH"]),
                  path=st.sampled_from(["/Patient", "/Patient/seed", "/Patient/other", "/", "/Patient/_search",
                                        "/Observation", "/Patient/seed/$validate"]),
                  body=json_ish, ctype=content_types)


@SETTINGS
@given(**body_cases)
async def test_random_bodies_never_500(raw_client: httpx.AsyncClient, method: str, path: str, body: bytes,
                                       ctype: str | None) -> None:
    await _bodies(raw_client, method, path, body, ctype)


@pytest.mark.slow
@SLOW
@given(**body_cases)
async def test_random_bodies_never_500_long(raw_client: httpx.AsyncClient, method: str, path: str, body: bytes,
                                            ctype: str | None) -> None:
    await _bodies(raw_client, method, path, body, ctype)


segment = st.one_of(
    st.sampled_from(["Patient", "seed", "_history", "1", "0", "-1", "metadata", "$validate", "$everything",
                     "_search", "Observation", "Unicorn", "..", ".", "%00", "patient", "Patient ", "x" * 70]),
    st.text(max_size=12).map(lambda s: quote(s, safe="")),
)
query_param = st.tuples(
    st.sampled_from(["_count", "_offset", "_since", "_at", "_summary", "_elements", "_format", "_pretty", "_id",
                     "identifier", "_sort", "_include", "name:exact", "_till", "gender"]),
    st.text(max_size=12),
)


async def _paths(client: httpx.AsyncClient, method: str, segments: list[str],
                 query: list[tuple[str, str]]) -> None:
    before = await seed(client)
    resp = await client.request(method, "http://test/fhir/" + "/".join(segments), params=query,
                                json=SEED if method in ("PUT", "POST", "PATCH") else None)
    assert resp.status_code < 500, (method, segments, query, resp.status_code, resp.text)
    await assert_seed_intact(client, before, resp.status_code)


path_cases = dict(method=st.sampled_from(["GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", "OPTIONS"]),
                  segments=st.lists(segment, max_size=5), query=st.lists(query_param, max_size=4))


@SETTINGS
@given(**path_cases)
async def test_random_paths_never_500(raw_client: httpx.AsyncClient, method: str, segments: list[str],
                                      query: list[tuple[str, str]]) -> None:
    if method == "DELETE" and segments[:2] == ["Patient", "seed"]:
        segments = ["Patient", "not-the-seed", *segments[2:]]
    await _paths(raw_client, method, segments, query)


@pytest.mark.slow
@SLOW
@given(**path_cases)
async def test_random_paths_never_500_long(raw_client: httpx.AsyncClient, method: str, segments: list[str],
                                           query: list[tuple[str, str]]) -> None:
    if method == "DELETE" and segments[:2] == ["Patient", "seed"]:
        segments = ["Patient", "not-the-seed", *segments[2:]]
    await _paths(raw_client, method, segments, query)


header_value = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.sampled_from(['W/"1"', 'W/"0"', '"1"', "*", "W/", 'W/"99999999999999999999999"', "return=minimal",
                     "return=OperationOutcome", "handling=strict", "identifier=x", "identifier=",
                     "Patient?gender=female", "application/fhir+xml", "*/*;q=0", "Mon, 01 Jan 2024 00:00:00 GMT",
                     "Thu, 01 Jan 1970 00:00:00 GMT", "application/json;;;", "-1", "9" * 40]),
)
headers_strategy = st.dictionaries(
    st.sampled_from(["If-Match", "If-None-Match", "If-None-Exist", "If-Modified-Since", "Prefer", "Accept",
                     "Content-Type", "Content-Length-Hint", "Accept-Charset", "X-Forwarded-Host"]),
    header_value, max_size=4)


@SETTINGS
@given(headers=headers_strategy, target=st.sampled_from(["read", "create", "update-other", "search", "history"]))
async def test_random_headers_never_500(raw_client: httpx.AsyncClient, headers: dict[str, str], target: str) -> None:
    before = await seed(raw_client)
    other = {**SEED, "id": "other"}
    request = {
        "read": ("GET", "/Patient/seed", None),
        "create": ("POST", "/Patient", {k: v for k, v in SEED.items() if k != "id"}),
        "update-other": ("PUT", "/Patient/other", other),
        "search": ("GET", "/Patient", None),
        "history": ("GET", "/Patient/seed/_history", None),
    }[target]
    method, path, body = request
    content = json.dumps(body).encode() if body is not None else None
    resp = await raw_client.request(method, path, content=content, headers=headers)
    assert resp.status_code < 500, (headers, target, resp.status_code, resp.text)
    await assert_seed_intact(raw_client, before, 400)  # no request here targets the seed with a write
