"""The notifier: a background task of the server that follows the store's change feed and delivers
rest-hook notifications (https://hl7.org/fhir/R4/subscription.html, and the topic-based Subscriptions of
the R5 Backport IG), then forwards pending messages (:mod:`fhir_exchange.notify.forward`).

Each round, if this process holds the delivery lease, every live Subscription (status requested,
active or error) is served from its stored cursor: the changes after it are judged in commit order
(:class:`~fhir_exchange.notify.judge.Judge`), each one that is news for the subscriber is sent, and the
cursor moves past it only once the receiver answered 2xx; a failure stops that Subscription's round and
schedules a retry with doubling back-off (``notify_retry_min`` to ``notify_retry_max``), so delivery is
at least once and in order, across restarts. ``requested`` becomes ``active`` once the endpoint took the
handshake (topic-based) or passed the endpoint check (plain criteria); ``notify_error_after``
consecutive failures set ``error`` with the reason in ``Subscription.error``; the next success sets
``active`` again. Every attempt is audited. A round also starts at once after any local commit.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

import httpx

from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.hooks import Change, CommitHook
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.interactions.router import Router
from fhir_exchange.notify import audit, rest_hook
from fhir_exchange.notify.criteria import CriteriaError
from fhir_exchange.notify.judge import Compiled, Judge, compile_spec
from fhir_exchange.notify.notification import notification_bundle
from fhir_exchange.notify.state import DeliveryState, Lease, States
from fhir_exchange.notify.subscription import Spec, SubscriptionError, parse_spec
from fhir_exchange.notify.topics import TOPICS
from fhir_exchange.search.parse import parse
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.audit import AuditSink, patient_references
from fhir_exchange.security.registry import Registry
from fhir_exchange.store.port import ResourceVersion

log = logging.getLogger(__name__)

NOTIFIER = Actor(client_id="notifier", system=True, admin=True, scopes=SYSTEM.scopes)
"""The server's own actor for status writes (the Subscription guard lets exactly these pass)."""

BATCH = 200  # changes judged per Subscription per round


def parse_instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def read_spec(resource: dict[str, Any]) -> Spec:
    return parse_spec(resource, is_topic=str(resource.get("criteria") or "").strip() in TOPICS)


class Notifier:
    def __init__(self, router: Router, registry: Registry | None, audit_sink: AuditSink | None, base_url: str) -> None:
        self.router = router
        self.svc = router.services
        self.settings = self.svc.settings
        self.base_url = base_url
        self.audit = audit_sink
        self.judge = Judge(router, registry, base_url)
        self.states = States(self.svc.store)
        self.lease = Lease(self.svc.store, f"notifier-{uuid.uuid4()}", self.settings.notify_lease)
        self.http: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._compiled: dict[tuple[str, int], Compiled] = {}
        # More work for the lease holder each round (message forwarding), given the notifier's HTTP client.
        self.extra_rounds: list[Callable[[httpx.AsyncClient], Awaitable[None]]] = []

    # -- the loop ---------------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` after the round under way: cancelling it inside a store write would leave the
        write half done and the shutdown waiting on it."""
        self._stopping = True
        self._wake.set()

    def commit_hook(self) -> CommitHook:
        async def hook(change: Change, version: ResourceVersion) -> None:
            self.wake()
            if change.type == "Subscription" and change.deleted:
                await self.states.drop(change.id)  # its cursor and schedule go with it

        return hook

    async def run(self) -> None:
        async with httpx.AsyncClient() as http:
            self.http = http
            try:
                while not self._stopping:
                    self._wake.clear()
                    try:
                        await self.round()
                    except Exception:  # a store hiccup must not end delivery: the next round retries
                        log.exception("A notification round failed")
                    if self._stopping:
                        break
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.settings.notify_interval)
            finally:
                with suppress(Exception):
                    await self.lease.release(self.svc.clock.now())

    async def round(self) -> None:
        if not await self.lease.acquire(self.svc.clock.now()):
            return
        for version in await self.live():
            if not await self.lease.acquire(self.svc.clock.now()):  # renewed per Subscription: slow receivers
                return
            try:
                await self.serve(version)
            except FhirError as err:  # e.g. a concurrent status write: the next round retries
                log.warning("Subscription/%s: %s", version.id, err.diagnostics)
            # A delete committed while this Subscription was being served: its commit hook may have dropped
            # the state before serve() wrote it back, so look again now that the writes are done.
            current = await self.svc.store.read("Subscription", version.id)
            if current is None or current.deleted:
                await self.states.drop(version.id)
        assert self.http is not None
        for extra in self.extra_rounds:
            await extra(self.http)

    async def live(self) -> list[ResourceVersion]:
        query = parse(self.svc.definitions, "Subscription", [("status", "requested,active,error"), ("_count", "1000")],
                      max_count=1000)
        return (await self.svc.store.search(query)).matches

    # -- one Subscription ---------------------------------------------------------------------------------

    async def serve(self, version: ResourceVersion) -> None:
        resource: dict[str, Any] = jsonio.loads(version.body)
        now_dt = self.svc.clock.now()
        now = instant(now_dt)
        state = await self.states.get(version.id, now) or await self.states.start(version.id, now)
        try:
            spec = read_spec(resource)
            compiled = self.compiled(version, spec)
        except (SubscriptionError, CriteriaError) as exc:
            await self.set_status(version.id, "error", f"The Subscription can no longer be served: {exc}")
            return
        if spec.end and now >= instant(parse_instant(spec.end)):
            await self.set_status(version.id, "off", "Subscription.end has passed")
            return
        if spec.channel == "websocket":  # delivered by the process holding the socket (websocket.py)
            if spec.status == "requested":
                await self.set_status(version.id, "active")
            return
        if state.retry_at and now < state.retry_at:
            return
        actor = await self.judge.owner(version, resource)
        if actor is None:
            await self.failed(version, spec, state, now_dt, "The client that wrote this Subscription is disabled or "
                              "no longer registered: nothing is sent on its behalf")
            return
        status = spec.status
        # A topic-based Subscription in error is probed with a handshake too, so that it comes back even
        # when no event is waiting.
        if status == "requested" or (status == "error" and spec.topic and state.failures > 0):
            if spec.topic:
                body = notification_bundle(spec, self.base_url, status=status, type="handshake",
                                           events=state.events, timestamp=now)
                if not await self.attempt(version, spec, state, now_dt, body=body):
                    return
            status = "active"
            await self.set_status(version.id, status)
        delivered = await self.deliver_changes(version, spec, compiled, actor, state, now_dt)
        if delivered is None:
            return
        if status == "error" and (delivered or state.failures == 0):
            await self.set_status(version.id, "active")
        if spec.topic and spec.heartbeat and not delivered:
            last = parse_instant(state.last_sent) if state.last_sent else None
            period = timedelta(seconds=max(spec.heartbeat, self.settings.notify_heartbeat_min))
            if last is None or now_dt - last >= period:
                body = notification_bundle(spec, self.base_url, status="active", type="heartbeat",
                                           events=state.events, timestamp=now)
                await self.attempt(version, spec, state, now_dt, body=body)

    def compiled(self, version: ResourceVersion, spec: Spec) -> Compiled:
        key = (version.id, version.version_id)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = compile_spec(self.router, spec, version.owner)
        return found

    async def deliver_changes(self, version: ResourceVersion, spec: Spec, compiled: Compiled, actor: Actor,
                              state: DeliveryState, now_dt: datetime) -> int | None:
        """Send what is news since the cursor; how many were sent, None when an attempt failed."""
        store = self.svc.store
        sent = 0
        start = state.cursor
        for change in await store.changes(state.cursor, BATCH):
            news = await self.judge.news(compiled, actor, change)
            if news is not None:
                focus, focus_version = news
                now = instant(self.svc.clock.now())
                if spec.topic:
                    body = notification_bundle(spec, self.base_url, status="active", type="event-notification",
                                               events=state.events + 1, timestamp=now, focus=focus,
                                               method=focus_version.method)
                    ok = await self.attempt(version, spec, state, now_dt, body=body, focus=focus,
                                            focus_owner=focus_version.owner)
                else:
                    ok = await self.attempt(version, spec, state, now_dt, resource=focus,
                                            focus_owner=focus_version.owner)
                if not ok:
                    return None
                state.events += 1
                sent += 1
            state.cursor = change.seq
            if news is not None:
                await self.states.put(version.id, state)
        if state.cursor != start:
            await self.states.put(version.id, state)
        return sent

    async def attempt(self, version: ResourceVersion, spec: Spec, state: DeliveryState, now_dt: datetime, *,
                      body: dict[str, Any] | None = None, resource: dict[str, Any] | None = None,
                      focus: dict[str, Any] | None = None, focus_owner: str | None = None) -> bool:
        assert self.http is not None
        result = await rest_hook.send(self.http, spec, body, allow_private=self.settings.allow_private_endpoints,
                                      timeout=self.settings.notify_timeout, resource=resource)
        sent = focus if focus is not None else resource
        now = instant(self.svc.clock.now())
        event = audit.delivery_event(
            what=f"Subscription/{version.id}", subscriber=version.owner, channel=spec.channel, url=result.url,
            status=result.status, ok=result.ok, error=result.error, recorded=now,
            entity=f"{sent['resourceType']}/{sent['id']}/_history/{(sent.get('meta') or {}).get('versionId', '')}"
            if sent is not None else None,
            subject=next(iter(sorted(patient_references(sent))), None) if sent is not None else None)
        await audit.record(self.audit, event, version.owner, {focus_owner} if focus_owner else set())
        state.last_attempt = now
        if result.ok:
            state.failures, state.retry_at, state.error, state.last_sent = 0, "", "", now
            await self.states.put(version.id, state)
            return True
        await self.failed(version, spec, state, now_dt, result.error)
        return False

    async def failed(self, version: ResourceVersion, spec: Spec, state: DeliveryState, now_dt: datetime,
                     error: str) -> None:
        state.failures += 1
        delay = min(self.settings.notify_retry_max, self.settings.notify_retry_min * 2 ** (state.failures - 1))
        state.retry_at = instant(now_dt + timedelta(seconds=delay))
        state.error = error
        await self.states.put(version.id, state)
        log.info("Subscription/%s: delivery failed (%d in a row, next attempt in %.1fs): %s", version.id,
                 state.failures, delay, error)
        if state.failures >= self.settings.notify_error_after and spec.status != "error":
            await self.set_status(version.id, "error", error)

    async def set_status(self, id: str, status: str, error: str = "") -> None:
        """Write the Subscription's status (and ``error``) as the server, on the version just read."""
        path = f"Subscription/{id}"
        current = (await self.router.dispatch(FhirRequest("GET", path, base_url=self.base_url, actor=NOTIFIER))).json()
        if current is None or (current.get("status") == status and current.get("error", "") == error):
            return
        current["status"] = status
        if error:
            current["error"] = error[:1000]
        else:
            current.pop("error", None)
        version = (current.get("meta") or {}).get("versionId")
        await self.router.dispatch(FhirRequest("PUT", path, headers={"if-match": f'W/"{version}"'}, body=current,
                                               base_url=self.base_url, actor=NOTIFIER))
