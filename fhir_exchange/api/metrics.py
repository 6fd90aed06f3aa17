"""``GET /metrics``: the Prometheus text exposition of :mod:`fhir_exchange.metrics`, outside the FHIR base.

Who may scrape: the addresses or networks of the ``metrics_allow`` setting (default loopback only:
``127.0.0.0/8,::1``; ``*`` for anyone). The metrics hold no patient data, but counts of consults and
the request mix are the institutions' business, and a reverse proxy in front forwards from its own
address: do not proxy ``/metrics`` (docs/operations.md), scrape the process directly.

Two values are computed when scraped rather than kept: the open consults (one count search of the
consult Tasks in an open status, through the store's index: no resource is read) and the age of the
oldest AuditEvent still waiting for the audit store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from starlette.requests import Request
from starlette.responses import Response

from fhir_exchange import metrics
from fhir_exchange.api.instrument import AuditLag
from fhir_exchange.consult.model import OPEN_TASK
from fhir_exchange.consult.profiles import TASK_CODE_SYSTEM
from fhir_exchange.interactions.services import Services
from fhir_exchange.search.parse import parse

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(setting: tuple[str, ...]) -> list[Network] | None:
    """The networks of ``metrics_allow``; None: anyone. A malformed entry fails at start-up."""
    if "*" in setting:
        return None
    try:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in setting if item.strip()]
    except ValueError as exc:
        raise ValueError(f"metrics_allow: {exc}") from None


class MetricsEndpoint:
    def __init__(self, svc: Services, audit_lag: AuditLag, allow: list[Network] | None) -> None:
        self.svc = svc
        self.audit_lag = audit_lag
        self.allow = allow

    def permitted(self, request: Request) -> bool:
        if self.allow is None:
            return True
        if request.client is None:
            return False
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:  # not an IP address (a Unix socket, a test client)
            return False
        return any(address in net for net in self.allow)

    async def metrics(self, request: Request) -> Response:
        if not self.permitted(request):
            return Response("metrics are not available to this address (setting metrics_allow)\n",
                            status_code=403, media_type="text/plain")
        try:
            metrics.OPEN_CONSULTS.set(await asyncio.wait_for(self.open_consults(), 5.0))
        except Exception:  # the store being down must not hide the other metrics (the request counts show it)
            log.warning("Counting the open consults failed", exc_info=True)
        metrics.AUDIT_OLDEST_PENDING_SECONDS.set(self.audit_lag.oldest_seconds())
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def open_consults(self) -> int:
        query = parse(self.svc.definitions, "Task", [
            ("code", f"{TASK_CODE_SYSTEM}|consult"), ("status", ",".join(sorted(OPEN_TASK))),
            ("_summary", "count")])
        result = await self.svc.store.search(query)
        return result.total or 0
