"""Message routing to an exchange-system institution: a consult-request message addressed to a hub that
connects through its own exchange system is applied here and forwarded to that system's $process-message
(a real receiving server on 127.0.0.1), retried while it is down, its response message correlated, and
the delivery state visible to the requester (and to nobody else)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from tests.consult.scenario import Consult, Network, message, ok_message
from tests.notify.conftest import notify_settings, open_network
from tests.notify.receiver import Received, Receiver


@pytest.fixture
async def exchange_net(tmp_path: Path, definitions: Definitions) -> AsyncIterator[Network]:
    async for n in open_network(notify_settings(tmp_path), definitions, hub="exchange"):
        yield n


def answer_ok(hit: Received) -> tuple[int, dict[str, Any]]:
    """What a hub's exchange system answers: a response message naming the message it answers."""
    header = hit.json()["entry"][0]["resource"]
    return 200, {"resourceType": "Bundle", "type": "message", "entry": [{"fullUrl": "urn:uuid:1", "resource": {
        "resourceType": "MessageHeader", "id": "answer-1", "eventCoding": header["eventCoding"],
        "source": {"endpoint": "https://hub-hie.example.kr/fhir"},
        "response": {"identifier": header["id"], "code": "ok"}}}]}


async def point_endpoint(net: Network, address: str) -> None:
    """The hub says where its exchange system is (it owns its Endpoint)."""
    org = (await net.hub.http.get(f"/{net.hub.org_ref}")).json()
    ref = org["endpoint"][0]["reference"]
    endpoint = (await net.hub.http.get(f"/{ref}")).json()
    endpoint["address"] = address
    r = await net.hub.http.put(f"/{ref}", json=endpoint)
    assert r.status_code == 200, r.text


async def delivery(net: Network, header: str, party: Any = None) -> Any:
    return await (party or net.partner).http.get("/$message-delivery", params={"message": header})


def parts(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    [d] = r.json()["parameter"]
    return {p["name"]: p.get("resource", next((v for k, v in p.items() if k.startswith("value")), None))
            for p in d["part"]}


async def test_a_message_to_an_exchange_system_is_forwarded_and_its_response_correlated(
        exchange_net: Network, receiver: Receiver) -> None:
    net = exchange_net
    await point_endpoint(net, f"{receiver.url}/fhir")
    receiver.answer = answer_ok
    await receiver.stop()  # the hub's exchange system is down at first
    c = Consult(net.partner, net.hub)
    resources = [c.patient_resource(), c.consent_resource(), c.request_resource(), c.task_resource()]
    msg = message("consult-request", net.partner, net.hub, resources[2], *resources)
    header = msg["entry"][0]["resource"]["id"]
    r = await net.partner.http.post("/$process-message", json=msg)
    ok_message(r)
    assert "$message-delivery" in r.text  # the answer says where to follow the delivery
    # Applied here as well: the consult exists on the exchange.
    assert (await net.hub.http.get(f"/Task/{c.task}")).status_code == 200

    for _ in range(100):
        state = parts(await delivery(net, header))
        if state["attempts"] >= 2:
            break
        await asyncio.sleep(0.05)
    assert state["status"] == "pending" and "failed" in state["error"], state
    assert state["destination"]["reference"] == net.hub.org_ref
    assert state["endpoint"] == f"{receiver.url}/fhir/$process-message"

    await receiver.start()
    [hit] = await receiver.wait_for(1, timeout=5.0)
    assert hit.method == "POST" and hit.path == "/fhir/$process-message"
    assert hit.json()["entry"][0]["resource"]["id"] == header
    for _ in range(100):
        state = parts(await delivery(net, header))
        if state["status"] != "pending":
            break
        await asyncio.sleep(0.05)
    assert state["status"] == "delivered" and "error" not in state, state
    assert state["response"]["entry"][0]["resource"]["response"] == {"identifier": header, "code": "ok"}
    # Only the sender follows its message.
    assert (await delivery(net, header, net.third)).status_code == 404
    assert (await delivery(net, header, net.hub)).status_code == 404


async def test_an_answer_that_is_not_the_response_is_retried(exchange_net: Network, receiver: Receiver) -> None:
    net = exchange_net
    await point_endpoint(net, f"{receiver.url}/fhir")
    receiver.answer = lambda hit: (200, {"resourceType": "OperationOutcome", "issue": []})
    c = Consult(net.partner, net.hub)
    resources = [c.patient_resource(), c.consent_resource(), c.request_resource(), c.task_resource()]
    msg = message("consult-request", net.partner, net.hub, resources[2], *resources)
    ok_message(await net.partner.http.post("/$process-message", json=msg))
    await receiver.wait_for(2, timeout=5.0)  # retried: a 200 without the response message is no delivery
    state = parts(await delivery(net, msg["entry"][0]["resource"]["id"]))
    assert state["status"] == "pending" and "without a response message" in state["error"], state


async def test_a_message_to_an_emr_institution_is_not_forwarded(net: Network, receiver: Receiver) -> None:
    c = Consult(net.partner, net.hub)
    resources = [c.patient_resource(), c.consent_resource(), c.request_resource(), c.task_resource()]
    msg = message("consult-request", net.partner, net.hub, resources[2], *resources)
    r = await net.partner.http.post("/$process-message", json=msg)
    ok_message(r)
    assert "$message-delivery" not in r.text
    assert (await delivery(net, msg["entry"][0]["resource"]["id"])).status_code == 404
