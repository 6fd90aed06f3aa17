"""Authentication, scopes, isolation, audit and Provenance over HTTP, with the real composition root."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from typing import Any

import httpx
import jwt
import pytest

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from scripts.smart_client import assertion, keygen
from tests.security.conftest import BASE, TOKEN, Exchange, enrol, token_form

PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn:a", "value": "1"}], "gender": "female"}


def oo(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


async def test_without_a_token_only_discovery_is_public(exchange: Exchange) -> None:
    http = exchange.http
    r = await http.get("/Patient")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "auth/token" in oo(r)["issue"][0]["diagnostics"]
    meta = await http.get("/metadata")
    assert meta.status_code == 200
    security = meta.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["extension"][0]["extension"][0]["valueUri"] == TOKEN
    smart = (await http.get("/.well-known/smart-configuration")).json()
    assert smart["token_endpoint"] == TOKEN and "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
    for bad in ("Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer "):
        r = await http.get("/Patient", headers={"Authorization": bad})
        assert r.status_code == 401 and "www-authenticate" in r.headers, bad


async def test_token_endpoint_grants_asked_intersected_with_allowed(exchange: Exchange) -> None:
    r = await exchange.http.post("/auth/token", data=token_form(exchange.a.client_id, exchange.a.pem,
                                                                "system/Patient.rs system/Task.cruds"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/Patient.rs system/Task.cruds"
    assert r.headers["cache-control"] == "no-store"


async def test_bad_assertions_are_refused_and_nothing_is_written(exchange: Exchange) -> None:
    http, a = exchange.http, exchange.a
    _jwks, other_pem = keygen("x")
    cases = {
        "forged": token_form(a.client_id, other_pem, "system/*.rs"),
        "unknown client": token_form("client-nobody", a.pem, "system/*.rs"),
        "wrong audience": token_form(a.client_id, a.pem, "system/*.rs",
                                     client_assertion=assertion(a.client_id, a.pem, "https://other/token")),
        "too long": token_form(a.client_id, a.pem, "system/*.rs",
                               client_assertion=assertion(a.client_id, a.pem, TOKEN, lifetime=3600)),
        "wrong algorithm": token_form(a.client_id, a.pem, "system/*.rs", client_assertion=jwt.encode(
            {"iss": a.client_id, "sub": a.client_id, "aud": TOKEN, "exp": int(time.time()) + 60, "jti": "j"},
            "a-shared-secret-that-is-long-enough!!", algorithm="HS256")),
        "garbage": token_form(a.client_id, a.pem, "system/*.rs", client_assertion="not.a.jwt"),
    }
    for name, form in cases.items():
        r = await http.post("/auth/token", data=form)
        assert r.status_code == 401, (name, r.text)
        assert 'error="invalid_client"' in r.headers["www-authenticate"], name
        assert oo(r)["issue"][0]["code"] == "login"
    assert (await http.post("/auth/token", data=token_form(a.client_id, a.pem, "system/*.rs",
                                                           grant_type="password"))).status_code == 400
    assert (await http.post("/auth/token", data=token_form(a.client_id, a.pem, "patient/*.rs"))).status_code == 400
    replayed = token_form(a.client_id, a.pem, "system/*.rs")
    assert (await http.post("/auth/token", data=replayed)).status_code == 200
    again = await http.post("/auth/token", data=replayed)
    assert again.status_code == 401 and "replay" in again.text


async def test_a_disabled_client_is_refused_at_once(exchange: Exchange) -> None:
    client = await exchange.as_(exchange.a)
    assert (await client.get("/Patient")).status_code == 200
    now = "2000-01-01T00:00:00.000Z"
    await exchange.app.state.registry.set_disabled(exchange.a.client_id, True, now)
    r = await client.get("/Patient")
    assert r.status_code == 401 and "disabled" in oo(r)["issue"][0]["diagnostics"]
    r = await exchange.http.post("/auth/token", data=token_form(exchange.a.client_id, exchange.a.pem, "system/*.rs"))
    assert r.status_code == 401


async def test_scopes_are_checked_for_every_interaction_and_inside_bundles(exchange: Exchange) -> None:
    reader = await exchange.as_(exchange.a, "system/Patient.rs")
    assert (await reader.get("/Patient")).status_code == 200
    r = await reader.post("/Patient", json=PATIENT)
    assert r.status_code == 403 and "system/Patient.c" in oo(r)["issue"][0]["diagnostics"]
    assert (await reader.get("/Observation")).status_code == 403
    assert (await reader.get("/")).status_code == 403  # system search needs system/*.s
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": PATIENT},
        {"request": {"method": "GET", "url": "Patient"}}]}
    answer = (await reader.post("/", json=bundle)).json()
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["403", "200"]
    transaction = {**bundle, "type": "transaction"}
    assert (await reader.post("/", json=transaction)).status_code == 403
    assert (await (await exchange.as_(exchange.a)).get("/Patient")).json()["total"] == 0


async def test_institutions_are_isolated_and_the_directory_is_shared(exchange: Exchange) -> None:
    a, b = await exchange.as_(exchange.a), await exchange.as_(exchange.b)
    created = await a.post("/Patient", json=PATIENT)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert (await a.get(f"/Patient/{pid}")).status_code == 200
    for path in (f"/Patient/{pid}", f"/Patient/{pid}/_history", f"/Patient/{pid}/_history/1",
                 f"/Patient/{pid}/$everything"):
        r = await b.get(path)
        assert r.status_code == 404, (path, r.text)
    assert (await b.get("/Patient")).json()["total"] == 0
    assert (await b.get("/Patient", params={"_summary": "count"})).json()["total"] == 0
    assert (await b.put(f"/Patient/{pid}", json={**PATIENT, "id": pid})).status_code == 409
    assert (await b.delete(f"/Patient/{pid}")).json()["issue"][0]["code"] == "not-found"
    assert (await a.get(f"/Patient/{pid}")).json()["meta"]["versionId"] == "1"
    # The shared directory: both see both institutions' Organizations, each changes only its own.
    orgs = {e["resource"]["id"] for e in (await b.get("/Organization")).json()["entry"]}
    assert {exchange.a.organization, exchange.b.organization} <= orgs
    mine = (await b.get(f"/Organization/{exchange.b.organization}")).json()
    assert (await b.put(f"/Organization/{mine['id']}", json={**mine, "alias": ["B"]})).status_code == 200
    theirs = (await b.get(f"/Organization/{exchange.a.organization}")).json()
    r = await b.put(f"/Organization/{theirs['id']}", json={**theirs, "alias": ["taken"]})
    assert r.status_code == 403 and "belongs to another institution" in oo(r)["issue"][0]["diagnostics"]


async def test_conformance_resources_and_reindex_need_an_admin(exchange: Exchange) -> None:
    sp = {"resourceType": "SearchParameter", "id": "nick", "url": "http://example.org/SearchParameter/nick",
          "name": "nick", "status": "active", "code": "nick", "base": ["Patient"], "type": "string",
          "expression": "Patient.name.given", "description": "x"}
    a = await exchange.as_(exchange.a)
    r = await a.put("/SearchParameter/nick", json=sp)
    assert r.status_code == 403 and "admin" in oo(r)["issue"][0]["diagnostics"]
    assert (await a.post("/$reindex")).status_code == 403
    token = await exchange.token(exchange.b, client_id=exchange.b.admin_id)
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=exchange.app), base_url=BASE,
                              headers={"Authorization": f"Bearer {token}"})
    assert (await admin.post("/$reindex")).status_code == 200


async def test_every_request_is_audited_and_readable_by_the_institutions_concerned(exchange: Exchange) -> None:
    a, b = await exchange.as_(exchange.a), await exchange.as_(exchange.b)
    pid = (await a.post("/Patient", json=PATIENT)).json()["id"]
    await a.get(f"/Patient/{pid}")
    await b.get(f"/Patient/{pid}")  # denied: 404, audited too
    await exchange.http.get("/Patient")  # no token: 401, audited as anonymous
    events = (await a.get("/AuditEvent", params={"entity": f"Patient/{pid}", "_count": "100"})).json()
    subtypes = [e["resource"]["subtype"][0]["code"] for e in events.get("entry", [])]
    assert "create" in subtypes and "read" in subtypes, subtypes
    read = next(e["resource"] for e in events["entry"] if e["resource"]["subtype"][0]["code"] == "read")
    assert read["outcome"] == "0" and read["action"] == "R"
    assert read["agent"][0]["who"]["identifier"]["value"] == exchange.a.client_id
    assert {"reference": f"Organization/{exchange.a.organization}"} in [g["who"] for g in read["agent"]]
    patient_entity = next(x for x in read["entity"] if x.get("role", {}).get("code") == "1")
    assert patient_entity["what"]["reference"] == f"Patient/{pid}"
    assert "permit" in read["outcomeDesc"] and "owner" in read["outcomeDesc"]
    by_agent = (await a.get("/AuditEvent", params={"agent": f"Organization/{exchange.a.organization}"})).json()
    assert by_agent["total"] >= 2
    # B's own denied read is B's to see, not A's business (it revealed nothing).
    b_events = (await b.get("/AuditEvent", params={"_count": "100"})).json()
    denied = [e["resource"] for e in b_events.get("entry", []) if e["resource"]["outcome"] == "4"]
    assert denied and "deny" in denied[0]["outcomeDesc"]
    # AuditEvents are never changed through the API.
    any_id = events["entry"][0]["resource"]["id"]
    r = await a.put(f"/AuditEvent/{any_id}", json={**events["entry"][0]["resource"], "outcome": "8"})
    assert r.status_code == 403
    assert (await a.post("/AuditEvent", json=events["entry"][0]["resource"])).status_code == 403


async def test_every_write_records_its_provenance_in_the_same_unit_of_work(exchange: Exchange) -> None:
    a = await exchange.as_(exchange.a)
    before = (await a.get("/Provenance")).json()["total"]  # the enrolment's Organization and Endpoint
    assert before == 2
    pid = (await a.post("/Patient", json=PATIENT)).json()["id"]
    await a.put(f"/Patient/{pid}", json={**PATIENT, "id": pid, "active": True})
    found = (await a.get("/Provenance", params={"target": f"Patient/{pid}"})).json()
    assert found["total"] == 2
    activities = sorted(e["resource"]["activity"]["coding"][0]["code"] for e in found["entry"])
    assert activities == ["CREATE", "UPDATE"]
    agent = found["entry"][0]["resource"]["agent"][0]
    assert agent["who"]["identifier"]["value"] == exchange.a.client_id
    assert agent["onBehalfOf"]["reference"] == f"Organization/{exchange.a.organization}"
    # A refused write leaves neither the resource nor a Provenance.
    bad = await a.post("/Patient", json={**PATIENT, "gender": "unknown-gender"})
    assert bad.status_code in (400, 422)
    assert (await a.get("/Provenance")).json()["total"] == before + 2


async def test_rate_limit_answers_429_with_retry_after(secure_settings: Settings, definitions: Definitions) -> None:
    app = create_app(dataclasses.replace(secure_settings, rate_limit=2), definitions=definitions)
    async with app.router.lifespan_context(app):
        who = await enrol(app, "A", "12345678")
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        token = (await http.post("/auth/token", data=token_form(who.client_id, who.pem, "system/*.rs"))).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        codes = [(await http.get("/Patient", headers=headers)).status_code for _ in range(8)]
        assert 429 in codes and codes[0] == 200
        limited = await http.get("/Patient", headers=headers)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        await asyncio.sleep(1.1)
        assert (await http.get("/Patient", headers=headers)).status_code == 200


async def test_cors_for_configured_origins(secure_settings: Settings, definitions: Definitions) -> None:
    app = create_app(dataclasses.replace(secure_settings, cors_origins=("https://app.example",)),
                     definitions=definitions)
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        pre = await http.options("/Patient", headers={"Origin": "https://app.example",
                                                      "Access-Control-Request-Method": "GET",
                                                      "Access-Control-Request-Headers": "Authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        other = await http.options("/Patient", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers
        meta = await http.get("/metadata", headers={"Origin": "https://app.example"})
        assert meta.headers["access-control-allow-origin"] == "https://app.example"
        assert meta.json()["rest"][0]["security"]["cors"] is True


def test_assertion_helper_makes_a_verifiable_jwt() -> None:
    jwks, pem = keygen("k")
    token = assertion("c", pem, TOKEN, kid="k")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES384" and header["kid"] == "k"
    payload = token.split(".")[1]
    claims = base64.urlsafe_b64decode(payload + "==")
    assert b'"aud"' in claims and jwks["keys"]


async def test_message_answers_are_per_sending_institution(exchange: Exchange) -> None:
    """Institution B resending A's message identity gets no part of A's answer and no 409 that would tell
    it A's message exists: its message is its own."""
    header = {"resourceType": "MessageHeader", "id": "mh-1", "source": {"endpoint": "urn:shared-hie"},
              "eventCoding": {"system": "http://fhir-exchange.org/fhir/CodeSystem/consult-event",
                              "code": "consult-request"}, "focus": [{"reference": "urn:uuid:sr"}]}
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "x"},
          "subject": {"reference": "urn:uuid:p"}}

    def message(gender: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "message", "timestamp": "2024-05-01T10:00:00Z",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:same-id"},
                "entry": [{"fullUrl": "urn:uuid:mh", "resource": header}, {"fullUrl": "urn:uuid:sr", "resource": sr},
                          {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "gender": gender}}]}

    a, b = await exchange.as_(exchange.a), await exchange.as_(exchange.b)
    first = await a.post("/$process-message", json=message("female"))
    assert first.status_code == 200
    other = await b.post("/$process-message", json=message("male"))
    assert other.status_code == 200 and other.json()["id"] != first.json()["id"]
    same = await b.post("/$process-message", json=message("female"))
    assert same.status_code == 409  # B's own identity reused by B with other content


async def test_a_request_whose_audit_record_cannot_be_written_fails_closed(exchange: Exchange,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    a = await exchange.as_(exchange.a)
    pid = (await a.post("/Patient", json=PATIENT)).json()["id"]
    audit_store = exchange.app.state.services.audit_store

    def broken() -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(audit_store, "transaction", broken)  # nothing may be answered without its record
    r = await a.get(f"/Patient/{pid}")
    assert r.status_code == 503 and "audit" in oo(r)["issue"][0]["diagnostics"]
    assert r.headers["retry-after"] and "gender" not in r.text
    monkeypatch.undo()
    assert (await a.get(f"/Patient/{pid}")).status_code == 200
