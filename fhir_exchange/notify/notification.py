"""Notification Bundles of the Subscriptions R5 Backport IG for R4
(http://hl7.org/fhir/uv/subscriptions-backport/notifications.html): a Bundle of type ``history`` whose
first entry is a ``Parameters`` resource (profile backport-subscription-status-r4) telling the
subscription, its topic, status, the notification ``type`` (handshake, heartbeat, event-notification,
query-status) and ``events-since-subscription-start``, then for an event the focus as the payload
content asks: nothing (``empty``), its full URL (``id-only``) or the resource (``full-resource``).
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir_exchange.notify.subscription import STATUS_PROFILE, Spec


def status_parameters(spec: Spec, base_url: str, *, status: str, type: str, events: int,
                      event: tuple[int, str, str] | None = None, error: str = "") -> dict[str, Any]:
    """``event``: (event number, timestamp, focus reference) of an event notification."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{spec.id}"}},
        {"name": "topic", "valueCanonical": spec.criteria},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": type},
        # A string in the R4 profile: the count is an integer64 in R5.
        {"name": "events-since-subscription-start", "valueString": str(events)},
    ]
    if event is not None:
        number, timestamp, focus = event
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(number)},
                                       {"name": "timestamp", "valueInstant": timestamp}]
        if spec.content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": focus}})
        params.append({"name": "notification-event", "part": parts})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]},
            "parameter": params}


def notification_bundle(spec: Spec, base_url: str, *, status: str, type: str, events: int, timestamp: str,
                        focus: dict[str, Any] | None = None, method: str = "PUT", error: str = "",
                        bundle_type: str = "history") -> dict[str, Any]:
    """A notification; ``focus`` (the resource as the subscriber may see it) for an event-notification."""
    event = None
    if focus is not None:
        event = (events, timestamp, f"{base_url}/{focus['resourceType']}/{focus['id']}")
    parameters = status_parameters(spec, base_url, status=status, type=type, events=events, event=event, error=error)
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters,
        "request": {"method": "GET", "url": f"Subscription/{spec.id}/$status"},
        "response": {"status": "200"}}]
    if focus is not None and spec.content != "empty":
        url = f"{focus['resourceType']}/{focus['id']}"
        request_url = url if method == "PUT" else focus["resourceType"]
        entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}", "request": {"method": method, "url": request_url},
                                 "response": {"status": "201" if method == "POST" else "200"}}
        if spec.content == "full-resource":
            entry["resource"] = focus
        entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": bundle_type, "timestamp": timestamp,
            "entry": entries}
