"""The rest-hook channel (https://hl7.org/fhir/R4/subscription.html#2.46.7.1): one HTTP request per
notification to ``channel.endpoint`` with the Subscription's ``channel.header`` s.

- plain R4 criteria without ``payload``: ``POST`` to the endpoint with an empty body (the subscriber then
  searches); with ``payload``: the resource as an update, ``PUT [endpoint]/[type]/[id]``;
- topic-based (Backport IG): ``POST`` of the notification Bundle (handshake, heartbeat, event).

The endpoint is checked again right before each request (:mod:`fhir_exchange.notify.endpoints`: what a
name resolves to may have changed since the Subscription was written) and redirects are not followed.
Anything but a 2xx answer is a failed attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from fhir_exchange.fhir import jsonio
from fhir_exchange.notify.endpoints import EndpointRefused, check_endpoint
from fhir_exchange.notify.subscription import Spec

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status: int  # the receiver's HTTP status, 0 when no answer came
    error: str  # why it failed ("" when ok)
    url: str


async def send(http: httpx.AsyncClient, spec: Spec, body: dict[str, Any] | None, *, allow_private: bool,
               timeout: float, resource: dict[str, Any] | None = None) -> Attempt:
    """``body``: a notification Bundle (topic-based); ``resource``: the changed resource (plain R4)."""
    url = spec.endpoint
    method, content = "POST", b""
    if body is not None:
        content = jsonio.dumps(body)
    elif resource is not None and spec.payload:
        method = "PUT"
        url = f"{spec.endpoint.rstrip('/')}/{resource['resourceType']}/{resource['id']}"
        content = jsonio.dumps(resource)
    try:
        await check_endpoint(url, allow_private=allow_private)
    except EndpointRefused as exc:
        return Attempt(False, 0, str(exc), url)
    headers = dict(spec.headers)
    if content:
        headers["Content-Type"] = FHIR_JSON
    try:
        r = await http.request(method, url, content=content, headers=headers, timeout=spec.timeout or timeout,
                               follow_redirects=False)
    except httpx.HTTPError as exc:
        return Attempt(False, 0, f"{method} {url} failed: {type(exc).__name__} {exc}".strip(), url)
    if 200 <= r.status_code < 300:
        return Attempt(True, r.status_code, "", url)
    return Attempt(False, r.status_code, f"{method} {url} answered {r.status_code}", url)
