"""The consult IG's exchanges end to end over HTTP: every example Bundle is accepted as it is meant to
travel (transaction Bundles to POST [base], message Bundles to $process-message), and resources that
take part in a consult are held to the consult profiles on every write path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_exchange.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "examples" / "bundles"
INVALID = ROOT / "examples" / "invalid"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _strip_profiles(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without meta.profile: the server must pick the consult profile from the content."""
    out = dict(resource)
    meta = dict(out.get("meta") or {})
    meta.pop("profile", None)
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


EXCHANGE = "https://exchange.fhir-exchange.org/fhir"
VALID = ROOT / "examples" / "valid"
# The state each example presupposes (the consult's Task status before it; None: nothing yet).
BEFORE = {"consult-request": None, "consult-status-update": "accepted", "consult-communication": "in-progress",
          "consult-report": "in-progress", "consult-cancel": "requested"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The examples' absolute references name this exchange: serve them at that base."""
    return dataclasses.replace(settings, public_base_url=EXCHANGE)


async def _held(client: httpx.AsyncClient, task_status: str | None) -> None:
    """The directory, and (for the later steps) the consult as the request created it, its Task moved on
    to ``task_status`` through legal transitions."""
    for name in ("Organization-requester", "Organization-consultant", "Endpoint-vpn-emr", "Endpoint-exchange-system",
                 "Practitioner-requester", "PractitionerRole-requester", "PractitionerRole-consultant"):
        res = _load(VALID / f"{name}.json")
        assert (await client.put(f"/{res['resourceType']}/{res['id']}", json=res)).status_code in (200, 201)
    doc = _load(VALID / "PractitionerRole-consultant.json")
    prac = {"resourceType": "Practitioner", "id": "cons-doc", **{k: v for k, v in _load(
        VALID / "Practitioner-requester.json").items() if k not in ("resourceType", "id")}}
    assert (await client.put("/Practitioner/cons-doc", json=prac)).status_code in (200, 201), doc
    if task_status is None:
        return
    for name in ("Patient-consult-patient", "Consent-remote-consultation", "ServiceRequest-consult-request",
                 "Task-requested"):
        res = _load(VALID / f"{name}.json")
        r = await client.put(f"/{res['resourceType']}/{res['id']}", json=res)
        assert r.status_code == 201, r.text
    task = _load(VALID / "Task-requested.json")
    for status in {"requested": [], "accepted": ["accepted"], "in-progress": ["accepted", "in-progress"]}[task_status]:
        task = {**task, "status": status, "owner": {"reference": "PractitionerRole/cons-role"}}
        r = await client.put("/Task/task", json=task)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", sorted(BUNDLES.glob("Bundle-transaction-*.json")), ids=lambda p: p.stem)
async def test_transaction_examples_commit(client: httpx.AsyncClient, path: Path) -> None:
    await _held(client, BEFORE[path.stem.removeprefix("Bundle-transaction-")])
    r = await client.post("", json=_load(path))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    assert all(e["response"]["status"].startswith(("200", "201")) for e in body["entry"])


@pytest.mark.parametrize("path", sorted(BUNDLES.glob("Bundle-message-*.json")), ids=lambda p: p.stem)
async def test_message_examples_answer_ok(client: httpx.AsyncClient, path: Path) -> None:
    await _held(client, BEFORE[path.stem.removeprefix("Bundle-message-")])
    r = await client.post("/$process-message", json=_load(path))
    assert r.status_code == 200, r.text
    header = r.json()["entry"][0]["resource"]
    assert header["response"]["code"] == "ok", r.text


async def test_revoking_a_request_before_work_began_cancels_its_task(client: httpx.AsyncClient) -> None:
    await _held(client, "requested")
    r = await client.post("", json=_load(BUNDLES / "Bundle-transaction-consult-cancel.json"))
    assert r.status_code == 200, r.text
    task = (await client.get("/Task/task")).json()
    assert task["status"] == "cancelled" and task["statusReason"]["text"].startswith("The requester revoked")


async def test_message_breaking_its_event_profile_gets_fatal_error(client: httpx.AsyncClient) -> None:
    message = _load(BUNDLES / "Bundle-message-consult-request.json")
    message["identifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0b7a4a52-5d67-4c1e-9f6e-1f0000000001"}
    message["entry"] = [e for e in message["entry"] if e["resource"]["resourceType"] != "Consent"]
    r = await client.post("/$process-message", json=message)
    assert r.status_code == 200, r.text
    header = r.json()["entry"][0]["resource"]
    assert header["response"]["code"] == "fatal-error"
    count = await client.get("/ServiceRequest", params={"_summary": "count"})
    assert count.json()["total"] == 0, "a rejected message must change nothing"


CONSULT_RULE_BREAKERS = [
    "ServiceRequest-missing-requester.json",
    "ServiceRequest-status-on-hold.json",
    "Task-rejected-without-reason.json",
]


@pytest.mark.parametrize("name", CONSULT_RULE_BREAKERS)
async def test_consult_resources_are_held_to_the_consult_profiles(client: httpx.AsyncClient, name: str) -> None:
    """Even without meta.profile, a resource taking part in a consult must conform to its profile."""
    resource = _strip_profiles(_load(INVALID / name))
    resource.pop("id", None)
    r = await client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code in (400, 422), r.text
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_a_plain_service_request_is_not_held_to_the_consult_profile(client: httpx.AsyncClient) -> None:
    r = await client.post("/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/x"}})
    assert r.status_code == 201, r.text
