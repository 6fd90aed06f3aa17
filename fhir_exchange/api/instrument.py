"""Timing of the store, the validator and the audit sink, for the metrics of :mod:`fhir_exchange.metrics`.

The store and the validator are wrapped where the application is composed (``create_app``), so the
interactions, the repository and the adapters stay as they are and the command-line tools are not
measured. The cost is a clock read and a histogram update per call (a microsecond or two), against
store calls that take tens of microseconds at the least.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from fhir_exchange import metrics
from fhir_exchange.errors import Issue
from fhir_exchange.interactions.services import ResourceValidator
from fhir_exchange.store.port import (
    ChangeRecord,
    HistoryPage,
    HistoryQuery,
    Record,
    ResourceStore,
    ResourceVersion,
    SearchResult,
    UnitOfWork,
)

_clock = time.perf_counter
_op = {name: metrics.STORE_SECONDS.labels(name) for name in (
    "read", "vread", "history", "search", "transaction", "count", "granted", "changes", "last_change",
    "get_record", "put_record", "delete_record", "list_records", "purge_records")}


class TimedStore:
    """A :class:`ResourceStore` that times every call of the store it wraps (a unit of work as a whole,
    from its start to its commit or rollback); anything else is the wrapped adapter's."""

    def __init__(self, store: ResourceStore) -> None:
        self.inner = store
        self.name = store.name

    def __getattr__(self, name: str) -> Any:  # adapter-specific methods (set_indexer, ...)
        return getattr(self.inner, name)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        started = _clock()
        try:
            async with self.inner.transaction() as uow:
                yield uow
        finally:
            _op["transaction"].observe(_clock() - started)

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        started = _clock()
        try:
            return await self.inner.read(type, id)
        finally:
            _op["read"].observe(_clock() - started)

    async def vread(self, type: str, id: str, version_id: int) -> ResourceVersion | None:
        started = _clock()
        try:
            return await self.inner.vread(type, id, version_id)
        finally:
            _op["vread"].observe(_clock() - started)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        started = _clock()
        try:
            return await self.inner.history(query)
        finally:
            _op["history"].observe(_clock() - started)

    async def search(self, query: Any) -> SearchResult:
        started = _clock()
        try:
            return await self.inner.search(query)
        finally:
            _op["search"].observe(_clock() - started)

    async def reindex(self, type: str | None = None) -> int:
        return await self.inner.reindex(type)

    async def count(self, type: str | None = None) -> int:
        started = _clock()
        try:
            return await self.inner.count(type)
        finally:
            _op["count"].observe(_clock() - started)

    async def granted(self, visibility: Any, type: str, id: str) -> bool:
        started = _clock()
        try:
            return await self.inner.granted(visibility, type, id)
        finally:
            _op["granted"].observe(_clock() - started)

    async def changes(self, after: int, limit: int = 1000) -> list[ChangeRecord]:
        started = _clock()
        try:
            return await self.inner.changes(after, limit)
        finally:
            _op["changes"].observe(_clock() - started)

    async def last_change(self) -> int:
        started = _clock()
        try:
            return await self.inner.last_change()
        finally:
            _op["last_change"].observe(_clock() - started)

    async def get_record(self, kind: str, key: str, *, now: str) -> Record | None:
        started = _clock()
        try:
            return await self.inner.get_record(kind, key, now=now)
        finally:
            _op["get_record"].observe(_clock() - started)

    async def put_record(self, record: Record, *, if_absent: bool = False, now: str = "") -> bool:
        started = _clock()
        try:
            return await self.inner.put_record(record, if_absent=if_absent, now=now)
        finally:
            _op["put_record"].observe(_clock() - started)

    async def delete_record(self, kind: str, key: str) -> bool:
        started = _clock()
        try:
            return await self.inner.delete_record(kind, key)
        finally:
            _op["delete_record"].observe(_clock() - started)

    async def list_records(self, kind: str, *, now: str) -> list[Record]:
        started = _clock()
        try:
            return await self.inner.list_records(kind, now=now)
        finally:
            _op["list_records"].observe(_clock() - started)

    async def purge_records(self, now: str) -> int:
        started = _clock()
        try:
            return await self.inner.purge_records(now)
        finally:
            _op["purge_records"].observe(_clock() - started)


class TimedValidator:
    """A validator that records the time of each validation."""

    def __init__(self, validator: ResourceValidator) -> None:
        self.inner = validator

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def validate(self, resource: dict[str, Any], *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]:
        started = _clock()
        try:
            return self.inner.validate(resource, profiles=profiles, resource_type=resource_type)
        finally:
            metrics.VALIDATION_SECONDS.observe(_clock() - started)


class AuditLag:
    """The AuditEvents of this process waiting for the audit store: how many, and since when."""

    def __init__(self) -> None:
        self._since: dict[int, float] = {}
        self._ids = itertools.count()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        key = next(self._ids)
        started = self._since[key] = _clock()
        metrics.AUDIT_PENDING.inc()
        try:
            yield
        finally:
            del self._since[key]
            metrics.AUDIT_PENDING.dec()
            metrics.AUDIT_SECONDS.observe(_clock() - started)

    def oldest_seconds(self) -> float:
        # Insertion order is arrival order: the first entry is the oldest still waiting.
        first = next(iter(self._since.values()), None)
        return 0.0 if first is None else _clock() - first
