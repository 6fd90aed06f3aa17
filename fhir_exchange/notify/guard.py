"""The Subscription write guard (https://hl7.org/fhir/R4/subscription.html#2.46.7): a hook of the one
write path, so REST, Bundle entries and messages are held to the same rules.

A client's Subscription must name criteria this server can judge (a search URL on one resource, or a
consult topic with filters on the topic's type), a channel it sends (rest-hook, websocket) and an
endpoint it may call (:mod:`fhir_exchange.notify.endpoints`); a client holds at most
``subscriptions_per_client`` live Subscriptions. Anything else is a 422 (criteria, channel, endpoint) or
a 403 (the cap) OperationOutcome naming the element. The server owns ``status`` and ``error``: a client
may ask for ``off``, anything else it writes becomes ``requested`` until the notifier has reached the
endpoint (``active``); the writing client is recorded as a ``meta.tag`` (the cap counts them, the
notifier acts as that client). The server's own status writes pass unchecked.
"""

from __future__ import annotations

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.interactions.hooks import Change, Guard, WriteUnit
from fhir_exchange.notify.criteria import CriteriaError, invalid_criteria, parse_criteria
from fhir_exchange.notify.endpoints import HTTP_SCHEMES, WS_SCHEMES, EndpointRefused, check_endpoint
from fhir_exchange.notify.judge import CLIENT_TAG
from fhir_exchange.notify.subscription import SubscriptionError, parse_spec
from fhir_exchange.notify.topics import TOPICS
from fhir_exchange.search.parse import parse
from fhir_exchange.settings import Settings

LIVE = "requested,active,error"


def subscription_guard(settings: Settings, defs: Definitions) -> Guard:
    async def guard(change: Change, unit: WriteUnit) -> None:
        if change.type != "Subscription" or change.after is None:
            return
        if change.actor.system and change.before is not None and change.actor.client_id == "notifier":
            return  # the notifier's status writes
        resource = change.after
        try:
            spec = parse_spec(resource, is_topic=str(resource.get("criteria") or "").strip() in TOPICS)
        except SubscriptionError as exc:
            raise invalid_criteria(str(exc), exc.where) from None
        try:
            _check_criteria(defs, spec.criteria, spec.topic, spec.filters)
        except CriteriaError as exc:
            raise invalid_criteria(str(exc), "Subscription.criteria") from None
        if spec.endpoint:
            schemes = WS_SCHEMES | HTTP_SCHEMES if spec.channel == "websocket" else HTTP_SCHEMES
            try:
                await check_endpoint(spec.endpoint, allow_private=settings.allow_private_endpoints, schemes=schemes)
            except EndpointRefused as exc:
                raise FhirError(Category.UNPROCESSABLE, str(exc), ("Subscription.channel.endpoint",),
                                code="value") from None
        status = resource.get("status")
        resource["status"] = "off" if status == "off" else "requested"
        resource.pop("error", None)
        client = change.actor.client_id or "anonymous"
        meta = dict(resource.get("meta") or {})
        meta["tag"] = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == CLIENT_TAG)]
        meta["tag"].append({"system": CLIENT_TAG, "code": client})
        resource["meta"] = meta
        if resource["status"] != "off":
            await _check_cap(settings, defs, unit, client, change.id)

    return guard


def _check_criteria(defs: Definitions, criteria: str, topic: bool, filters: tuple[str, ...]) -> None:
    if not topic:
        if "/SubscriptionTopic/" in criteria or criteria.startswith(("http://", "https://")):
            raise CriteriaError(f"'{criteria}' is not a topic this server offers: one of {', '.join(sorted(TOPICS))}")
        parse_criteria(defs, criteria)
        return
    topic_type = TOPICS[criteria].type
    for f in filters:
        query = parse_criteria(defs, f)
        if query.type != topic_type:
            raise CriteriaError(f"The filter '{f}' is on {query.type}; the topic {criteria} is about {topic_type}")


async def _check_cap(settings: Settings, defs: Definitions, unit: WriteUnit, client: str, id: str) -> None:
    cap = settings.subscriptions_per_client
    await unit.uow.lock_key(f"subscriptions-of:{client}")
    query = parse(defs, "Subscription", [("_tag", f"{CLIENT_TAG}|{client}"), ("status", LIVE),
                                                    ("_count", str(cap + 1))])
    result = await unit.uow.search(query)
    others = [v for v in result.matches if v.id != id]
    if len(others) >= cap:
        raise FhirError(Category.FORBIDDEN, f"The client {client} already holds {len(others)} Subscriptions, the "
                        f"most one client may hold (FHIR_EXCHANGE_SUBSCRIPTIONS_PER_CLIENT={cap}): delete one or "
                        "set its status to off", ("Subscription",), code="too-costly")

