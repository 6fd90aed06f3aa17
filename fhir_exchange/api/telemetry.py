"""Per request, at the outermost edge: its id (``X-Request-Id``), its metrics and its access log line.

The id is the caller's ``X-Request-Id`` when it is a plausible id (up to 128 letters, digits and
``-._:``; anything else could forge log lines or carry data) and a new one otherwise; it is echoed on
the answer and set in :data:`fhir_exchange.logs.REQUEST_ID` for every log line written meanwhile.

The interaction and resource type come from the request's :class:`AuditTrail`, which the FHIR
endpoint leaves in the ASGI scope under :data:`TRAIL_KEY`; requests outside the FHIR base (health,
metrics, the landing page, the portal) count as interaction ``none``. A type the server does not know
counts as ``unknown``, so a client cannot create label values (time series) at will.

The access line names method, path without its query string (search criteria carry identifiers),
status, duration, interaction and type; never bodies, headers or tokens.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_exchange import metrics
from fhir_exchange.logs import REQUEST_ID

TRAIL_KEY = "fhir_exchange.trail"
HEADER = b"x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Scrapes and probes arrive every few seconds; their lines would drown the requests that matter.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

access_log = logging.getLogger("fhir_exchange.access")


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER:
            text = value.decode("latin-1")
            if _VALID_ID.fullmatch(text):
                return text
            break
    return _new_id()


_ids = itertools.count()
_prefix = (0, "")


def _new_id() -> str:
    """32 hex digits, unique across processes: a random prefix per process and a counter (a uuid4 read
    the system's random source on every request)."""
    global _prefix
    pid = os.getpid()
    if _prefix[0] != pid:  # a new process (a worker, a fork): its own prefix
        _prefix = (pid, uuid.uuid4().hex[:16])
    return f"{_prefix[1]}{next(_ids) & 0xFFFFFFFFFFFFFFFF:016x}"


class Telemetry:
    """Pure ASGI middleware (no request object is built, nothing is buffered)."""

    def __init__(self, app: ASGIApp, is_type: Callable[[str], bool]) -> None:
        self.app = app
        self.is_type = is_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500  # an exception before the answer started is answered 500 by the server

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.observe(scope, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        trail: Any = scope.get(TRAIL_KEY)
        interaction, type = "none", ""
        if trail is not None:
            interaction = trail.interaction or "other"  # refused before routing: 401, 406, 413, ...
            if trail.type:
                type = trail.type if self.is_type(trail.type) else "unknown"
        metrics.REQUESTS.labels(interaction, type, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(interaction).observe(seconds)
        path = scope["path"]
        level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(level, "%s %s %d", scope["method"], path, status, extra={
                "method": scope["method"], "path": path, "status": status,
                "duration_ms": round(seconds * 1000, 2), "interaction": interaction, "type": type})
