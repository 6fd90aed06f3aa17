"""R4 rest-hook Subscriptions on a real receiving server: a consult created by one institution reaches
the consultant's subscription, nothing reaches a third institution, headers and payload as the
Subscription asks, delivery audited. No wall-clock bound is asserted on the delivery: on a loaded
machine (the suite runs one process per core) it measured the machine, not the notifier."""

from __future__ import annotations

import asyncio

from tests.consult.scenario import Network, opened
from tests.notify.helpers import created, status_of, subscription
from tests.notify.receiver import Receiver


async def test_consult_reaches_the_consultant_and_nobody_else(
        net: Network, receiver: Receiver, second_receiver: Receiver) -> None:
    hub_sub = await created(net.hub.http, subscription(f"Task?owner={net.hub.org_ref}", receiver.url + "/hook",
                                                       headers=["Authorization: Bearer hub-secret"]))
    # The third institution asks for every Task: it may see none of this consult.
    third_sub = await created(net.third.http, subscription("Task", second_receiver.url + "/hook",
                                                           payload="application/fhir+json"))
    assert hub_sub["status"] == "requested"
    await status_of(net.hub.http, hub_sub["id"], "active")
    await status_of(net.third.http, third_sub["id"], "active")
    await opened(net)
    [hit] = await receiver.wait_for(1, timeout=10.0)
    assert (hit.method, hit.path, hit.body) == ("POST", "/hook", b"")  # no payload: an empty POST
    assert hit.headers["authorization"] == "Bearer hub-secret"
    await asyncio.sleep(0.5)  # several rounds of the notifier
    assert second_receiver.received == []
    assert len(receiver.received) == 1


async def test_payload_sends_the_resource_as_an_update_and_the_delivery_is_audited(
        net: Network, receiver: Receiver) -> None:
    sub = await created(net.hub.http, subscription(f"Task?owner={net.hub.org_ref}", receiver.url + "/fhir",
                                                   payload="application/fhir+json"))
    await status_of(net.hub.http, sub["id"], "active")
    consult = await opened(net)
    [hit] = await receiver.wait_for(1)
    assert (hit.method, hit.path) == ("PUT", f"/fhir/Task/{consult.task}")
    assert hit.headers["content-type"] == "application/fhir+json"
    assert hit.json()["owner"]["reference"] == net.hub.org_ref
    await asyncio.sleep(0.2)
    r = await net.hub.http.get("/AuditEvent", params={"type": "http://dicom.nema.org/resources/ontology/DCM|110106"})
    assert r.status_code == 200, r.text
    events = [e["resource"] for e in r.json().get("entry", [])]
    sent = [e for e in events if any(f"Task/{consult.task}/_history/1" == (x.get("what") or {}).get("reference")
                                     for x in e.get("entity", []))]
    assert sent and sent[0]["outcome"] == "0", events
    # The requester owns the Task: the record of its export is its to read too.
    r = await net.partner.http.get(f"/AuditEvent/{sent[0]['id']}")
    assert r.status_code == 200, r.text
