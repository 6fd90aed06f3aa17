"""Topic-based Subscriptions (Subscriptions R5 Backport IG): a consultant's EMR subscribed to its inbox
is told of each step of a consult — handshake, the new consult, the status changes, the questions, the
consult note — in notification Bundles with a SubscriptionStatus first; heartbeats; $status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.notify.subscription import STATUS_PROFILE
from fhir_exchange.notify.topics import TOPIC_BASE
from tests.consult.scenario import Consult, Network, advanced, opened, written
from tests.notify.conftest import notify_settings, open_network
from tests.notify.helpers import created, status_of, topic_subscription
from tests.notify.receiver import Received, Receiver


def status_params(hit: Received) -> dict[str, Any]:
    bundle = hit.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history", bundle
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Parameters" and first["meta"]["profile"] == [STATUS_PROFILE]
    out: dict[str, Any] = {}
    for p in first["parameter"]:
        out[p["name"]] = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
    out["entries"] = bundle["entry"][1:]
    return out


async def test_the_consultant_is_told_of_each_step_of_a_consult(net: Network, receiver: Receiver) -> None:
    for topic in ("consult-request", "consult-status", "consult-communication", "consult-note"):
        sub = await created(net.hub.http, topic_subscription(topic, f"{receiver.url}/{topic}"))
        await status_of(net.hub.http, sub["id"], "active")
    handshakes = await receiver.wait_for(4)
    assert {status_params(h)["type"] for h in handshakes} == {"handshake"}
    assert {h.path for h in handshakes} == {"/consult-request", "/consult-status", "/consult-communication",
                                            "/consult-note"}

    c = await opened(net)
    [new] = (await receiver.wait_for(5))[4:]
    p = status_params(new)
    assert (new.path, p["type"], p["topic"], p["events-since-subscription-start"]) == \
        ("/consult-request", "event-notification", TOPIC_BASE + "consult-request", "1")
    [event] = p["notification-event"][1:2] or [None]  # parts: event-number, timestamp, focus
    assert event is not None
    [entry] = p["entries"]
    assert entry["resource"]["id"] == c.task and entry["request"]["method"] == "PUT"

    await written(net.hub, c.communication(f"{c.request}-q1"))
    await advanced(c, "completed")  # accepted, in-progress, the note, completed
    hits = (await receiver.wait_for(10))[5:]
    seen: dict[str, list[str]] = {}
    for h in hits:  # in commit order per Subscription (not across them)
        seen.setdefault(h.path, []).append(status_params(h)["entries"][0]["resource"].get("status"))
    assert seen == {"/consult-communication": ["completed"], "/consult-note": ["current"],
                    "/consult-status": ["accepted", "in-progress", "completed"]}, seen


async def test_id_only_and_empty_payloads_and_filters(net: Network, receiver: Receiver) -> None:
    await created(net.partner.http, topic_subscription("consult-status", f"{receiver.url}/id-only",
                                                       content="id-only"))
    await created(net.partner.http, topic_subscription("consult-status", f"{receiver.url}/empty", content="empty"))
    mine = Consult(net.partner, net.hub)
    await created(net.partner.http, topic_subscription("consult-status", f"{receiver.url}/filtered",
                                                       filters=[f"Task?_id={mine.task}"]))
    await receiver.wait_for(3)  # handshakes
    other = await opened(net)
    await opened(net, mine)
    await advanced(other, "accepted")
    await advanced(mine, "accepted")
    hits = (await receiver.wait_for(8))[3:]
    by_path: dict[str, list[Received]] = {}
    for h in hits:
        by_path.setdefault(h.path, []).append(h)
    assert len(by_path["/id-only"]) == 2 and len(by_path["/empty"]) == 2 and len(by_path["/filtered"]) == 1
    id_only = status_params(by_path["/id-only"][0])["entries"][0]
    assert "resource" not in id_only and id_only["fullUrl"].endswith(f"/Task/{other.task}")
    assert status_params(by_path["/empty"][0])["entries"] == []
    filtered = status_params(by_path["/filtered"][0])["entries"][0]
    assert filtered["resource"]["id"] == mine.task


async def test_a_third_institution_subscribed_to_every_topic_hears_nothing(net: Network, receiver: Receiver) -> None:
    for topic in ("consult-request", "consult-status", "consult-communication", "consult-note"):
        await created(net.third.http, topic_subscription(topic, f"{receiver.url}/{topic}"))
    await receiver.wait_for(4)
    c = await opened(net)
    await written(net.hub, c.communication(f"{c.request}-q1"))
    await advanced(c, "completed")
    mark = await created(net.third.http, topic_subscription("consult-request", f"{receiver.url}/mark"))
    await status_of(net.third.http, mark["id"], "active")  # its handshake came after every step above
    assert [h.path for h in receiver.received][4:] == ["/mark"]


@pytest.fixture
async def beating(tmp_path: Path, definitions: Definitions) -> AsyncIterator[Network]:
    async for n in open_network(notify_settings(tmp_path, notify_heartbeat_min=1), definitions):
        yield n


async def test_heartbeat_and_status(beating: Network, receiver: Receiver) -> None:
    sub = await created(beating.hub.http, topic_subscription("consult-request", receiver.url, heartbeat=1))
    hits = await receiver.wait_for(3, timeout=4.0)
    assert [status_params(h)["type"] for h in hits] == ["handshake", "heartbeat", "heartbeat"]
    r = await beating.hub.http.get("/Subscription/$status", params={"id": sub["id"]})
    assert r.status_code == 200, r.text
    [entry] = r.json()["entry"]
    params = {p["name"]: p for p in entry["resource"]["parameter"]}
    assert params["type"]["valueCode"] == "query-status" and params["status"]["valueCode"] == "active"
    assert params["subscription"]["valueReference"]["reference"].endswith(f"/Subscription/{sub['id']}")
    # What the caller may not read is left out at type level.
    r = await beating.third.http.get("/Subscription/$status", params={"id": sub["id"]})
    assert r.status_code == 200 and r.json()["total"] == 0, r.text
