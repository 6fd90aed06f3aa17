"""The async storage port. Adapters (``sqlite.py``, ``mongo.py``) are the only importers of their
drivers and translate driver errors into :mod:`fhir_exchange.errors` at this boundary.

Every write happens inside a unit of work (:meth:`ResourceStore.transaction`): one resource write or a
whole transaction Bundle commits or rolls back as one. Reads and searches inside a unit of work see
its own writes; outside, each call reads one consistent snapshot.

The server, not the store, decides versions: ``put`` receives the full resource with
``meta.versionId`` and ``meta.lastUpdated`` already set and an ``expected_version`` precondition
that the store checks atomically (optimistic locking; two writers on one version: one wins, the
other gets :class:`VersionConflict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.errors import Category, FhirError


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One stored version of a resource. ``body`` is the JSON as stored (empty when deleted)."""

    type: str
    id: str
    version_id: int
    last_updated: str  # FHIR instant, UTC, millisecond precision: sortable as text
    deleted: bool
    body: bytes
    method: str = "PUT"  # POST | PUT | PATCH | DELETE: the interaction that made this version


class VersionConflict(FhirError):
    """The expected version did not match the stored one."""

    def __init__(self, diagnostics: str, *, precondition: bool = False) -> None:
        super().__init__(Category.PRECONDITION_FAILED if precondition else Category.CONFLICT, diagnostics)


NEW: int = 0
"""``expected_version`` meaning: the resource must not exist yet (or exist only as deleted)."""

ANY: int = -1
"""``expected_version`` meaning: no precondition."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One extracted search value of one resource; the search module defines what goes in it.

    ``kind`` is the SearchParameter type (token, string, date, number, quantity, reference, uri,
    special). Columns not used by the kind are None. Dates and numbers are ranges [low, high].
    """

    param: str
    kind: str
    system: str | None = None
    code: str | None = None
    text: str | None = None  # normalised string, token display/text, reference display
    low: str | float | None = None
    high: str | float | None = None
    ref_type: str | None = None
    ref_id: str | None = None
    ref_version: str | None = None
    uri: str | None = None
    group: int | None = None  # composite parameters: components extracted from one element share it


Indexer = Callable[[str, dict[str, Any]], Sequence[IndexEntry]]
"""Extracts the search index entries of a resource (type, resource) -> entries."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    type: str | None = None  # None: system level
    id: str | None = None  # set: instance level
    since: str | None = None  # instant, inclusive (_since)
    at: str | None = None  # instant: versions current at that time (_at)
    till: str | None = None  # instant, inclusive: pins paging to the first page's snapshot
    count: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[ResourceVersion]
    total: int


@dataclass(slots=True)
class SearchResult:
    matches: list[ResourceVersion]
    total: int | None  # None when not computed (_total=none)
    includes: list[ResourceVersion] = field(default_factory=list)


class UnitOfWork(Protocol):
    async def read(self, type: str, id: str) -> ResourceVersion | None:
        """The current version (a deleted marker included), or None if never written."""

    async def put(self, version: ResourceVersion, resource: dict[str, Any], *, expected_version: int) -> None:
        """Write a new version (create or update). ``version.body`` holds the serialised resource;
        ``resource`` is the same, parsed, for index extraction. Checks ``expected_version``
        (``NEW``, ``ANY`` or the current version id) atomically: at once, or (an adapter may buffer
        writes) at the latest when the unit of work next reads, searches or commits, so a conflict
        always fails the unit of work before anything is committed."""

    async def delete(self, version: ResourceVersion, *, expected_version: int) -> None:
        """Write a deletion marker version (``version.deleted`` is True, ``body`` empty)."""

    async def search(self, query: Any) -> SearchResult:
        """Search inside this unit of work (sees its own writes). ``query`` is a
        :class:`fhir_exchange.search.query.SearchQuery`."""

    async def lock_key(self, key: str) -> None:
        """Serialise writers on ``key`` until this unit of work ends (race-free conditional create)."""


class ResourceStore(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]: ...

    async def read(self, type: str, id: str) -> ResourceVersion | None: ...

    async def vread(self, type: str, id: str, version_id: int) -> ResourceVersion | None: ...

    async def history(self, query: HistoryQuery) -> HistoryPage: ...

    async def search(self, query: Any) -> SearchResult: ...

    async def reindex(self, type: str | None = None) -> int:
        """Re-extract search index entries of current resources (after SearchParameter changes)."""
        ...

    async def count(self, type: str | None = None) -> int: ...
