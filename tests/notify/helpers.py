"""Subscriptions as tests write them, and waits on the server's state."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from fhir_exchange.notify.subscription import BACKPORT_PROFILE, FILTER_CRITERIA, HEARTBEAT_PERIOD, PAYLOAD_CONTENT
from fhir_exchange.notify.topics import TOPIC_BASE


def subscription(criteria: str, endpoint: str, *, payload: str | None = None, headers: list[str] | None = None,
                 channel: str = "rest-hook") -> dict[str, Any]:
    chan: dict[str, Any] = {"type": channel, "endpoint": endpoint}
    if payload:
        chan["payload"] = payload
    if headers:
        chan["header"] = headers
    return {"resourceType": "Subscription", "status": "requested", "reason": "consult inbox",
            "criteria": criteria, "channel": chan}


def topic_subscription(topic: str, endpoint: str, *, content: str = "full-resource",
                       filters: tuple[str, ...] | list[str] = (), heartbeat: int | None = None,
                       channel: str = "rest-hook") -> dict[str, Any]:
    chan: dict[str, Any] = {"type": channel, "endpoint": endpoint, "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]}}
    if heartbeat:
        chan["extension"] = [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat}]
    sub: dict[str, Any] = {"resourceType": "Subscription", "meta": {"profile": [BACKPORT_PROFILE]},
                           "status": "requested", "reason": "consult inbox", "criteria": TOPIC_BASE + topic,
                           "channel": chan}
    if filters:
        sub["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]}
    return sub


async def created(http: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await http.post("/Subscription", json=resource)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def status_of(http: httpx.AsyncClient, sid: str, want: str, timeout: float = 5.0) -> dict[str, Any]:
    """The Subscription once its status is ``want``."""
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get(f"/Subscription/{sid}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] == want:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"Subscription/{sid} is {body['status']}, not {want}: {body}")
        await asyncio.sleep(0.05)
