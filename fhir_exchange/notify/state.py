"""Delivery state kept as store :class:`~fhir_exchange.store.port.Record` s, so that it survives a restart
and is shared by every process on the store: per Subscription, the change-feed cursor (the ``seq`` of the
last change judged), the event count and the retry schedule; one lease naming the process that delivers.

Only the lease holder delivers rest-hook notifications and forwards messages, so two processes never
send one notification twice at once; a holder that stops renewing (it crashed) loses the lease after
``notify_lease`` seconds and another process takes over from the stored cursors: delivery is at least once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhir_exchange.clock import instant
from fhir_exchange.store.port import Record, ResourceStore

SUBSCRIPTION = "notify-subscription"
LEASE = "notify-lease"


@dataclass(slots=True)
class DeliveryState:
    cursor: int  # the seq of the last change judged for this Subscription
    events: int = 0  # notifications sent (eventsSinceSubscriptionStart)
    failures: int = 0  # consecutive failed attempts
    retry_at: str = ""  # FHIR instant before which no attempt is made ("" : now)
    error: str = ""  # why the last attempt failed
    last_sent: str = ""  # when a notification (or heartbeat) last reached the endpoint
    last_attempt: str = ""

    def to_bytes(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeliveryState:
        data: dict[str, Any] = orjson.loads(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class States:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def get(self, subscription: str, now: str) -> DeliveryState | None:
        record = await self.store.get_record(SUBSCRIPTION, subscription, now=now)
        return None if record is None else DeliveryState.from_bytes(record.value)

    async def put(self, subscription: str, state: DeliveryState) -> None:
        await self.store.put_record(Record(SUBSCRIPTION, subscription, state.to_bytes()))

    async def start(self, subscription: str, now: str) -> DeliveryState:
        """The state of a Subscription seen for the first time: it is told of changes from now on."""
        state = DeliveryState(cursor=await self.store.last_change())
        written = await self.store.put_record(Record(SUBSCRIPTION, subscription, state.to_bytes()), if_absent=True,
                                              now=now)
        if written:
            return state
        return await self.get(subscription, now) or state

    async def drop(self, subscription: str) -> None:
        await self.store.delete_record(SUBSCRIPTION, subscription)


class Lease:
    """The delivery lease: held by one process, renewed on every round, lost when not renewed in time."""

    def __init__(self, store: ResourceStore, holder: str, seconds: float) -> None:
        self.store = store
        self.holder = holder
        self.seconds = seconds
        self._renewed: datetime | None = None  # when this process last wrote its lease

    async def acquire(self, now: datetime) -> bool:
        """Rounds follow every commit: the holder rewrites its lease at most every third of its term, and
        the others only read it while it is held (issue 19: a lease write per round was a synced SQLite
        write per created resource, and every worker not holding it took the write lock to learn so)."""
        if self._renewed is not None and timedelta(0) <= now - self._renewed < timedelta(seconds=self.seconds / 3):
            return True  # held, and valid for at least two thirds of its term still
        at = instant(now)
        record = Record(LEASE, "deliver", self.holder.encode(), instant(now + timedelta(seconds=self.seconds)))
        current = await self.store.get_record(LEASE, "deliver", now=at)
        if current is not None and current.value != self.holder.encode():
            self._renewed = None
            return False  # another process holds it
        if current is None and not await self.store.put_record(record, if_absent=True, now=at):
            self._renewed = None
            return False  # another process took it meanwhile
        if current is not None:
            await self.store.put_record(record)  # renewed
        self._renewed = now
        return True

    async def release(self, now: datetime) -> None:
        self._renewed = None
        current = await self.store.get_record(LEASE, "deliver", now=instant(now))
        if current is not None and current.value == self.holder.encode():
            await self.store.delete_record(LEASE, "deliver")
