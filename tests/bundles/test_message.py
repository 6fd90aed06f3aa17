"""$process-message over HTTP: consult events, response messages, idempotency, refusals."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import httpx
import pytest

from fhir_exchange.bundles.message import CONSULT_EVENT_SYSTEM
from fhir_exchange.settings import Settings
from tests.bundles.helpers import SYS, patient

SRC = "https://emr.small-hospital.example/fhir"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The messaging engine on its own, with deliberately minimal messages: the consult profiles that a
    real consult message must also meet are tested with the IG's examples in tests/consult."""
    return dataclasses.replace(settings, consult_profiles=False)


def message(event: str, *resources: tuple[str, dict[str, Any]], focus: str | None = None,
            header_id: str = "mh-1", ident: str | None = "msg-1") -> dict[str, Any]:
    header = {"resourceType": "MessageHeader", "id": header_id,
              "eventCoding": {"system": CONSULT_EVENT_SYSTEM, "code": event},
              "source": {"endpoint": SRC}}
    if focus:
        header["focus"] = [{"reference": focus}]
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "message", "timestamp": "2024-05-01T10:00:00Z",
                           "entry": [{"fullUrl": f"urn:uuid:{header_id}", "resource": header}]}
    if ident:
        out["identifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{ident}"}
    out["entry"] += [{"fullUrl": u, "resource": r} for u, r in resources]
    return out


def consult_request(ident: str = "msg-1") -> dict[str, Any]:
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "consult"},
          "subject": {"reference": "urn:uuid:pat-1"}}
    return message("consult-request", ("urn:uuid:sr-1", sr), ("urn:uuid:pat-1", patient("m-1")),
                   focus="urn:uuid:sr-1", ident=ident)


def header(resp: dict[str, Any]) -> dict[str, Any]:
    assert resp["resourceType"] == "Bundle" and resp["type"] == "message"
    h: dict[str, Any] = resp["entry"][0]["resource"]
    assert h["resourceType"] == "MessageHeader"
    return h


async def test_consult_request_applied_and_answered(client: httpx.AsyncClient) -> None:
    r = await client.post("/$process-message", json=consult_request())
    assert r.status_code == 200, r.text
    h = header(r.json())
    assert h["response"] == {"identifier": "mh-1", "code": "ok", "details": h["response"]["details"]}
    assert h["destination"][0]["endpoint"] == SRC
    srs = (await client.get("/ServiceRequest")).json()
    assert srs["total"] == 1
    pid = (await client.get(f"/Patient?identifier={SYS}|m-1")).json()["entry"][0]["resource"]["id"]
    assert srs["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"


async def test_repeated_message_returns_original_response_and_changes_nothing(client: httpx.AsyncClient) -> None:
    first = await client.post("/$process-message", json=consult_request())
    again = await client.post("/$process-message", json=consult_request())
    assert again.status_code == 200
    assert again.content == first.content
    assert (await client.get("/ServiceRequest")).json()["total"] == 1
    assert (await client.get("/Patient")).json()["total"] == 1
    # a new message id is a new message
    third = await client.post("/$process-message", json=consult_request(ident="msg-2"))
    assert header(third.json())["response"]["code"] == "ok"
    assert (await client.get("/ServiceRequest")).json()["total"] == 2


async def test_a_reused_message_id_with_other_content_is_refused(client: httpx.AsyncClient) -> None:
    first = await client.post("/$process-message", json=consult_request())
    assert header(first.json())["response"]["code"] == "ok"
    resent = consult_request()
    resent["timestamp"] = "2024-05-01T10:05:00Z"  # a retry may refresh the timestamp: still the same message
    assert (await client.post("/$process-message", json=resent)).content == first.content
    other = consult_request()
    other["entry"][1]["resource"]["code"] = {"text": "another consult"}
    r = await client.post("/$process-message", json=other)
    assert r.status_code == 409 and r.json()["resourceType"] == "OperationOutcome", r.text
    assert "different content" in r.json()["issue"][0]["diagnostics"]
    assert (await client.get("/ServiceRequest")).json()["total"] == 1


async def test_message_answers_live_outside_the_fhir_namespace(client: httpx.AsyncClient) -> None:
    first = await client.post("/$process-message", json=consult_request())
    key = first.json()["id"]
    # The stored answer is no Bundle resource: a client can neither read it nor plant one for a future message.
    assert (await client.get(f"/Bundle/{key}")).status_code == 404
    assert (await client.get("/Bundle")).json()["total"] == 0
    future = consult_request(ident="msg-future")
    planted = {"resourceType": "Bundle", "type": "message", "timestamp": "2024-05-01T10:00:00Z", "entry": [
        {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "MessageHeader", "id": "x", "source": {"endpoint": SRC},
                                              "eventUri": "urn:planted", "response": {"identifier": "mh-1",
                                                                                     "code": "ok"}}}]}
    reply_id = (await client.post("/$process-message", json=consult_request(ident="msg-probe"))).json()["id"]
    assert (await client.put(f"/Bundle/{reply_id}", json={**planted, "id": reply_id})).status_code == 201
    answer = await client.post("/$process-message", json=future)
    assert header(answer.json())["response"]["code"] == "ok" and "urn:planted" not in answer.text


async def test_unknown_event_and_bad_focus_get_fatal_error(client: httpx.AsyncClient) -> None:
    bad = consult_request()
    bad["entry"][0]["resource"]["eventCoding"]["code"] = "no-such-event"
    r = await client.post("/$process-message", json=bad)
    assert r.status_code == 200
    out = r.json()
    assert header(out)["response"]["code"] == "fatal-error"
    oo = out["entry"][1]["resource"]
    assert oo["resourceType"] == "OperationOutcome" and "no-such-event" in oo["issue"][0]["diagnostics"]
    assert (await client.get("/ServiceRequest")).json()["total"] == 0

    bad = consult_request(ident="msg-3")
    bad["entry"][0]["resource"]["focus"] = [{"reference": "urn:uuid:elsewhere"}]
    r = await client.post("/$process-message", json=bad)
    assert header(r.json())["response"]["code"] == "fatal-error"
    assert "does not resolve" in r.text


async def test_failing_resource_rolls_back_the_message(client: httpx.AsyncClient) -> None:
    msg = consult_request(ident="msg-4")
    msg["entry"][2]["resource"]["birthDate"] = "yesterday"
    r = await client.post("/$process-message", json=msg)
    assert header(r.json())["response"]["code"] == "fatal-error"
    assert (await client.get("/ServiceRequest")).json()["total"] == 0
    assert (await client.get("/Patient")).json()["total"] == 0
    # the fatal answer is final: the same message gets it again
    again = await client.post("/$process-message", json=msg)
    assert again.content == r.content


async def test_consult_cancel_needs_revoked_request(client: httpx.AsyncClient) -> None:
    sr = {"resourceType": "ServiceRequest", "id": "sr-9", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/p-9"}}
    msg = message("consult-cancel", ("urn:uuid:sr-9", sr), focus="urn:uuid:sr-9", ident="msg-5")
    r = await client.post("/$process-message", json=msg)
    assert header(r.json())["response"]["code"] == "fatal-error"
    ok = copy.deepcopy(msg)
    ok["identifier"]["value"] = "urn:uuid:msg-6"
    ok["entry"][1]["resource"]["status"] = "revoked"
    r = await client.post("/$process-message", json=ok)
    # A cancellation never creates the request it cancels: the server does not hold sr-9.
    assert header(r.json())["response"]["code"] == "fatal-error", r.text
    assert "does not hold" in r.text
    assert (await client.get("/ServiceRequest/sr-9")).status_code == 404
    assert (await client.put("/ServiceRequest/sr-9", json=sr)).status_code == 201
    ok["identifier"]["value"] = "urn:uuid:msg-7"
    r = await client.post("/$process-message", json=ok)
    assert header(r.json())["response"]["code"] == "ok", r.text
    assert (await client.get("/ServiceRequest/sr-9")).json()["status"] == "revoked"


async def test_not_a_message_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/$process-message", json={"resourceType": "Bundle", "type": "collection"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    r = await client.post("/$process-message", json={"resourceType": "Bundle", "type": "message",
                                                      "entry": [{"resource": patient("x")}]})
    assert r.status_code == 400 and "bdl-12" in r.text
    r = await client.post("/$process-message", json=patient("x"))
    assert r.status_code == 400


async def test_async_is_declined(client: httpx.AsyncClient) -> None:
    r = await client.post("/$process-message?async=true", json=consult_request())
    assert r.status_code == 400
    assert "async" in r.json()["issue"][0]["diagnostics"]
    assert (await client.get("/ServiceRequest")).json()["total"] == 0


async def test_parameters_wrapper(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [{"name": "content", "resource": consult_request()}]}
    r = await client.post("/$process-message", json=body)
    assert header(r.json())["response"]["code"] == "ok"
