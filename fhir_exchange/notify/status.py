"""$status of the Subscriptions R5 Backport IG
(http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status):
``GET [base]/Subscription/[id]/$status`` or ``GET [base]/Subscription/$status?id=a&id=b``.

The answer is a Bundle of type ``searchset`` with one ``Parameters`` (backport-subscription-status-r4,
``type`` query-status) per Subscription the caller may read: its status, the events sent since it
started and, when the last attempt failed, the ``error`` (the receiver's answer or why it was not
reached) — the delivery failures its owner sees. Another institution's Subscription is a 404 at
instance level and absent at type level, as a read would be.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.errors import not_found
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.notify.notification import status_parameters
from fhir_exchange.notify.state import States
from fhir_exchange.notify.subscription import SubscriptionError, parse_spec
from fhir_exchange.notify.topics import TOPICS

DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"


async def status(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    ids = [id] if id else [i for v in req.query_values("id") for i in v.split(",") if i]
    states = States(repo.svc.store)
    now = instant(repo.svc.clock.now())
    entries: list[dict[str, Any]] = []
    for sid in ids:
        version = await repo.access("Subscription", sid.rpartition("/")[2])
        if version is None or version.deleted:
            if id:
                raise not_found(f"Subscription/{sid} is not known")
            continue
        resource: dict[str, Any] = jsonio.loads(version.body)
        try:
            spec = parse_spec(resource, is_topic=str(resource.get("criteria") or "").strip() in TOPICS)
        except SubscriptionError:
            continue
        state = await states.get(version.id, now)
        error = str(resource.get("error") or "") or (state.error if state is not None else "")
        params = status_parameters(spec, req.base_url, status=str(resource.get("status") or ""), type="query-status",
                                   events=state.events if state is not None else 0, error=error)
        entries.append({"fullUrl": f"urn:uuid:{params['id']}", "resource": params, "search": {"mode": "match"}})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "timestamp": now,
              "entry": entries}
    return FhirResponse(200, resource=bundle)


def install(operations: OperationRegistry) -> None:
    operations.register(Operation("status", status, DEFINITION, type=True, instance=True,
                                  resource_types=("Subscription",), methods=("GET", "POST"), permission="r"))
