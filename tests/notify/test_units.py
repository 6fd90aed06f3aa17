"""The pure parts: reading a Subscription, topics and their triggers, criteria judged in memory, the
notification Bundle's shape, and the endpoint check made again right before a delivery."""

from __future__ import annotations

import httpx
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.notify.criteria import CriteriaError, Evaluator, parse_criteria
from fhir_exchange.notify.notification import notification_bundle
from fhir_exchange.notify.rest_hook import send
from fhir_exchange.notify.subscription import STATUS_PROFILE, SubscriptionError, parse_spec
from fhir_exchange.notify.topics import TOPIC_BASE, TOPICS
from tests.notify.helpers import subscription, topic_subscription
from tests.notify.receiver import Receiver


def test_reading_subscriptions() -> None:
    spec = parse_spec({**subscription("Task", "https://x.example/h", headers=["X-Key: 1"]), "id": "s"}, is_topic=False)
    assert (spec.channel, spec.payload, spec.headers, spec.topic) == ("rest-hook", "", (("X-Key", "1"),), False)
    spec = parse_spec({**topic_subscription("consult-note", "https://x.example/h", content="id-only", heartbeat=60,
                                            filters=["DocumentReference?subject=Patient/1"]), "id": "t"}, is_topic=True)
    assert (spec.content, spec.heartbeat, spec.filters) == ("id-only", 60, ("DocumentReference?subject=Patient/1",))
    for bad, where in [({"channel": {"type": "rest-hook"}}, "Subscription.channel.endpoint"),
                       ({"channel": {"type": "rest-hook", "endpoint": "https://x", "header": ["no colon"]}},
                        "Subscription.channel.header"),
                       ({"channel": {"type": "rest-hook", "endpoint": "https://x", "header": ["Host: evil"]}},
                        "Subscription.channel.header")]:
        with pytest.raises(SubscriptionError) as err:
            parse_spec({"resourceType": "Subscription", "criteria": "Task", **bad}, is_topic=False)
        assert err.value.where == where


def test_topics_trigger_on_their_interactions() -> None:
    status = TOPICS[TOPIC_BASE + "consult-status"]
    task = {"resourceType": "Task", "id": "1", "status": "accepted"}
    assert status.triggered("PUT", task, {**task, "status": "requested"})
    assert not status.triggered("PUT", task, task)  # no status change
    assert not status.triggered("POST", task, None)  # a create is consult-request's
    request = TOPICS[TOPIC_BASE + "consult-request"]
    assert request.search("org-1").endswith("&owner=Organization/org-1")
    assert "owner" not in request.search(None)


def test_criteria_are_judged_in_memory(definitions: Definitions) -> None:
    evaluator = Evaluator(definitions)
    query = parse_criteria(definitions, "Task?owner=Organization/hub&status=requested,received")
    evaluator.load({"resourceType": "Task", "id": "1", "status": "requested", "intent": "order",
                    "owner": {"reference": "Organization/hub"}})
    assert evaluator.matches(query)
    evaluator.load({"resourceType": "Task", "id": "2", "status": "accepted", "intent": "order",
                    "owner": {"reference": "Organization/hub"}})
    assert not evaluator.matches(query)
    evaluator.load({"resourceType": "Patient", "id": "1"})
    assert not evaluator.matches(query)  # another type
    with pytest.raises(CriteriaError):
        parse_criteria(definitions, "Task?owner:Organization.name=x")


def test_notification_bundle_shape() -> None:
    spec = parse_spec({**topic_subscription("consult-request", "https://x.example/h"), "id": "s1"}, is_topic=True)
    focus = {"resourceType": "Task", "id": "t1", "status": "requested"}
    bundle = notification_bundle(spec, "https://fhir.example/fhir", status="active", type="event-notification",
                                 events=7, timestamp="2026-01-01T00:00:00.000Z", focus=focus, method="POST")
    assert bundle["type"] == "history"
    status, event = bundle["entry"]
    assert status["resource"]["meta"]["profile"] == [STATUS_PROFILE]
    assert status["request"] == {"method": "GET", "url": "Subscription/s1/$status"}
    names = {p["name"]: p for p in status["resource"]["parameter"]}
    assert names["events-since-subscription-start"]["valueString"] == "7"
    assert names["subscription"]["valueReference"]["reference"] == "https://fhir.example/fhir/Subscription/s1"
    parts = {p["name"]: p for p in names["notification-event"]["part"]}
    assert parts["focus"]["valueReference"]["reference"] == "https://fhir.example/fhir/Task/t1"
    assert event["resource"] == focus and event["request"] == {"method": "POST", "url": "Task"}


async def test_the_endpoint_is_checked_again_before_each_delivery() -> None:
    receiver = await Receiver().start()
    try:
        spec = parse_spec({**subscription("Task", receiver.url), "id": "s"}, is_topic=False)
        async with httpx.AsyncClient() as http:
            refused = await send(http, spec, None, allow_private=False, timeout=2)
            assert not refused.ok and "FHIR_EXCHANGE_ALLOW_PRIVATE_ENDPOINTS" in refused.error
            assert receiver.received == []
            allowed = await send(http, spec, None, allow_private=True, timeout=2)
            assert allowed.ok and len(receiver.received) == 1
    finally:
        await receiver.stop()
