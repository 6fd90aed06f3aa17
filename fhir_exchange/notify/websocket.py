"""The websocket channel, R4's bind-with-id protocol (https://hl7.org/fhir/R4/subscription.html#2.46.7.2):
the subscriber opens ``[base]/ws`` (with its access token when authentication is on), sends
``bind [id]`` for a Subscription of channel type ``websocket`` it may read, gets ``bound [id]``, and
then ``ping [id]`` for each change that meets the criteria; a topic-based Subscription gets the
notification Bundle (Backport IG) as the text of the message instead.

A websocket is held by one process, so its notifications are judged by that process, from the change
feed, starting at the moment of binding (a client that was not connected reconnects and searches): the
same :class:`~fhir_exchange.notify.judge.Judge` as rest-hook, so a notification never tells what the
Subscription's owner may not read, and each one is audited. ``[base]/ws`` knows no HTTP framework: the
api layer hands it anything with ``receive_text`` and ``send_text``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any, Protocol

from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.interactions.router import Router
from fhir_exchange.notify import audit
from fhir_exchange.notify.criteria import CriteriaError
from fhir_exchange.notify.judge import Judge, compile_spec
from fhir_exchange.notify.notification import notification_bundle
from fhir_exchange.notify.subscription import SubscriptionError, parse_spec
from fhir_exchange.notify.topics import TOPICS
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.audit import AuditSink
from fhir_exchange.store.port import ResourceVersion

log = logging.getLogger(__name__)


class Socket(Protocol):
    async def receive_text(self) -> str: ...

    async def send_text(self, data: str) -> None: ...


class WebSocketHub:
    def __init__(self, router: Router, judge: Judge, audit_sink: AuditSink | None) -> None:
        self.router = router
        self.judge = judge
        self.audit = audit_sink
        self.interval = router.services.settings.notify_interval
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """A local commit: every binding looks at the feed now."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def serve(self, socket: Socket, actor: Actor) -> None:
        """Answer ``bind`` requests until the socket closes (the caller's receive raises)."""
        followers: dict[str, asyncio.Task[None]] = {}
        lock = asyncio.Lock()  # one message at a time on the socket
        try:
            while True:
                text = (await socket.receive_text()).strip()
                verb, _, sid = text.partition(" ")
                sid = sid.strip()
                if verb != "bind" or not sid:
                    await socket.send_text(f"error {text[:100]}: send 'bind <Subscription id>'")
                    continue
                problem, version = await self._bindable(sid, actor)
                if version is None:
                    await socket.send_text(f"error {sid}: {problem}")
                    continue
                if sid not in followers:
                    cursor = await self.router.services.store.last_change()
                    followers[sid] = asyncio.create_task(self._follow(socket, lock, version, cursor))
                async with lock:
                    await socket.send_text(f"bound {sid}")
        finally:
            for task in followers.values():
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task

    async def _bindable(self, sid: str, actor: Actor) -> tuple[str, ResourceVersion | None]:
        try:
            await self.router.dispatch(FhirRequest("GET", f"Subscription/{sid}", base_url=self.judge.base_url,
                                                   actor=actor))
        except FhirError as err:
            return err.diagnostics, None
        version = await self.router.services.store.read("Subscription", sid)
        if version is None or version.deleted:
            return "no such Subscription", None
        resource = jsonio.loads(version.body)
        if (resource.get("channel") or {}).get("type") != "websocket":
            return "not a websocket Subscription", None
        if resource.get("status") == "off":
            return "the Subscription is off", None
        return "", version

    async def _follow(self, socket: Socket, lock: asyncio.Lock, version: ResourceVersion, cursor: int) -> None:
        resource: dict[str, Any] = jsonio.loads(version.body)
        try:
            spec = parse_spec(resource, is_topic=str(resource.get("criteria") or "").strip() in TOPICS)
            compiled = compile_spec(self.router, spec, version.owner)
        except (SubscriptionError, CriteriaError) as exc:
            async with lock:
                await socket.send_text(f"error {version.id}: {exc}")
            return
        owner = await self.judge.owner(version, resource)
        if owner is None:
            return
        store = self.router.services.store
        events = 0
        while True:
            changed = self._changed
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.interval)
            for change in await store.changes(cursor, 200):
                cursor = change.seq
                news = await self.judge.news(compiled, owner, change)
                if news is None:
                    continue
                focus, focus_version = news
                events += 1
                now = instant(self.router.services.clock.now())
                if spec.topic:
                    text = jsonio.dumps(notification_bundle(spec, self.judge.base_url, status="active",
                                                       type="event-notification", events=events, timestamp=now,
                                                       focus=focus, method=focus_version.method)).decode()
                else:
                    text = f"ping {version.id}"
                async with lock:
                    await socket.send_text(text)
                event = audit.delivery_event(
                    what=f"Subscription/{version.id}", subscriber=version.owner, channel="websocket",
                    url=f"{self.judge.base_url}/ws", status=0, ok=True, error="", recorded=now,
                    entity=f"{focus_version.type}/{focus_version.id}/_history/{focus_version.version_id}",
                    subject=None)
                await audit.record(self.audit, event, version.owner,
                                   {focus_version.owner} if focus_version.owner else set())
