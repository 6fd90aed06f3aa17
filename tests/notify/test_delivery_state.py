"""Retries with back-off: a receiver that is down gets every notification once it comes back, in commit
order; the Subscription goes to error (with the reason, also in $status) and back to active."""

from __future__ import annotations

import asyncio

from tests.consult.scenario import Consult, Network, opened
from tests.notify.helpers import created, status_of, subscription, topic_subscription
from tests.notify.receiver import Receiver


async def test_a_receiver_that_is_down_gets_the_notifications_after_it_comes_back(
        net: Network, receiver: Receiver) -> None:
    sub = await created(net.hub.http, subscription(f"Task?owner={net.hub.org_ref}", receiver.url,
                                                   payload="application/fhir+json"))
    await status_of(net.hub.http, sub["id"], "active")
    await receiver.stop()
    first = await opened(net)
    second = await opened(net, Consult(net.partner, net.hub))
    down = await status_of(net.hub.http, sub["id"], "error")
    assert "failed" in down["error"], down
    r = await net.hub.http.get(f"/Subscription/{sub['id']}/$status")
    assert r.status_code == 200, r.text
    params = {p["name"]: p for p in r.json()["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "error"
    assert params["error"]["valueCodeableConcept"]["text"] == down["error"]
    assert params["events-since-subscription-start"]["valueString"] == "0"
    # Another institution learns nothing of it.
    r = await net.third.http.get(f"/Subscription/{sub['id']}/$status")
    assert r.status_code == 404, r.text

    await receiver.start()  # same port
    hits = await receiver.wait_for(2, timeout=5.0)
    assert [h.path for h in hits] == [f"/Task/{first.task}", f"/Task/{second.task}"]  # commit order
    back = await status_of(net.hub.http, sub["id"], "active")
    assert "error" not in back
    r = await net.hub.http.get(f"/Subscription/{sub['id']}/$status")
    params = {p["name"]: p for p in r.json()["entry"][0]["resource"]["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "2"
    assert "error" not in params


async def test_a_topic_subscription_in_error_comes_back_without_waiting_for_an_event(
        net: Network, receiver: Receiver) -> None:
    await receiver.stop()
    sub = await created(net.hub.http, topic_subscription("consult-request", receiver.url))
    down = await status_of(net.hub.http, sub["id"], "error")  # the handshake was refused, repeatedly
    assert "failed" in down["error"]
    await receiver.start()
    await status_of(net.hub.http, sub["id"], "active")  # a handshake probe got through
    [hit] = receiver.received[:1]
    assert '"handshake"' in hit.body.decode()


async def test_a_deleted_subscription_is_no_longer_served(net: Network, receiver: Receiver) -> None:
    sub = await created(net.hub.http, subscription(f"Task?owner={net.hub.org_ref}", receiver.url))
    await status_of(net.hub.http, sub["id"], "active")
    r = await net.hub.http.delete(f"/Subscription/{sub['id']}")
    assert r.status_code in (200, 204), r.text
    await opened(net)
    await asyncio.sleep(0.4)
    assert receiver.received == []
    store = net.app.state.services.store
    assert await store.get_record("notify-subscription", sub["id"], now="") is None
