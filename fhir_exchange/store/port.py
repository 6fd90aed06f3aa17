"""The async storage port. Adapters (``sqlite.py``, ``mongo.py``) are the only importers of their
drivers and translate driver errors into :mod:`fhir_exchange.errors` at this boundary.

Every write happens inside a unit of work (:meth:`ResourceStore.transaction`): one resource write or a
whole transaction Bundle commits or rolls back as one. Reads and searches inside a unit of work see
its own writes; outside, each call reads one consistent snapshot.

The server, not the store, decides versions: ``put`` receives the full resource with
``meta.versionId`` and ``meta.lastUpdated`` already set and an ``expected_version`` precondition
that the store checks atomically (optimistic locking; two writers on one version: one wins, the
other gets :class:`VersionConflict`).

Beside the FHIR resources a store keeps internal :class:`Record` s (registered clients, the token-signing
secret, used client-assertion ids...): shared by every process on the store, never reachable through
the FHIR API (no search, read, history or change feed sees them) and written outside units of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.query import Visibility


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
    owner: str | None = None  # the institution (Organization id) the resource belongs to; None: the system


class VersionConflict(FhirError):
    """The expected version did not match the stored one."""

    def __init__(self, diagnostics: str, *, precondition: bool = False) -> None:
        super().__init__(Category.PRECONDITION_FAILED if precondition else Category.CONFLICT, diagnostics)


NEW: int = 0
"""``expected_version`` meaning: the resource must not exist yet (or exist only as deleted)."""

ANY: int = -1
"""``expected_version`` meaning: no precondition."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    type: str | None = None  # None: system level
    id: str | None = None  # set: instance level
    since: str | None = None  # instant, inclusive (_since)
    at: str | None = None  # instant: versions current at that time (_at)
    till: str | None = None  # instant, inclusive: pins paging to the first page's snapshot
    count: int = 50
    offset: int = 0
    visibility: Visibility | None = None  # None: every version (the system actor)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[ResourceVersion]
    total: int


@dataclass(slots=True)
class SearchResult:
    matches: list[ResourceVersion]
    total: int | None  # None when not computed (_total=none)
    includes: list[ResourceVersion] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Grant:
    """Access to one resource given to an institution that does not own it (the consent decision of a
    consult). Grants are written in sets named by a ``basis`` (e.g. the consult they come from), and a
    basis's set is replaced as a whole whenever what it is derived from changes."""

    grantee: str  # institution (Organization id)
    type: str
    id: str
    until: str | None = None  # FHIR instant after which the grant no longer holds; None: open


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One committed write, numbered by the store's change feed. ``seq`` grows with commit order, so a
    reader that remembers the last ``seq`` it saw (its cursor) sees every later write exactly once."""

    seq: int
    type: str
    id: str
    version_id: int
    deleted: bool
    last_updated: str


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """The stored answer to a FHIR message (messaging.html#reliable), kept outside the FHIR namespace:
    ``key`` names the message (source and identity), ``digest`` its content, ``body`` the response."""

    key: str
    digest: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """An internal record (authentication data shared by every process on the store), outside the FHIR
    namespace. ``(kind, key)`` names it; an expired record (``expires <= now``) is absent."""

    kind: str  # "client", "secret", "jti", ...: a name without "|"
    key: str
    value: bytes
    expires: str | None = None  # FHIR instant (UTC ms, compare as text); None: never

    def __post_init__(self) -> None:
        if "|" in self.kind:  # a store may key records by "kind|key"
            raise ValueError(f"A record kind has no '|': {self.kind!r}")


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
        :class:`fhir_exchange.search.query.SearchQuery`; its ``visibility`` applies to every subquery."""

    async def lock_key(self, key: str) -> None:
        """Serialise writers on ``key`` until this unit of work ends (race-free conditional create)."""

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        """Whether a grant to one of ``visibility.institutions`` valid at ``visibility.at`` covers
        ``type/id`` (ownership and shared types are the caller's to check, on the version it holds)."""

    async def replace_grants(self, basis: str, grants: Sequence[Grant]) -> None:
        """Replace every grant written under ``basis`` with ``grants`` (an empty list revokes them)."""

    async def read_message(self, key: str) -> MessageRecord | None:
        """The stored answer to the message ``key``, if one was stored."""

    async def write_message(self, record: MessageRecord) -> None:
        """Store a message answer; raises :class:`VersionConflict` if ``record.key`` is already stored."""


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

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool: ...

    async def changes(self, after: int, limit: int = 1000) -> list[ChangeRecord]:
        """Committed writes with ``seq > after``, in ``seq`` order, at most ``limit``."""
        ...

    async def last_change(self) -> int:
        """The ``seq`` of the newest committed write (0 when none): where a new reader starts."""
        ...

    # -- internal records: each call atomic on its own, outside any unit of work ----------------------

    async def get_record(self, kind: str, key: str, *, now: str) -> Record | None:
        """The record ``(kind, key)``; None when absent or expired (``expires <= now``)."""
        ...

    async def put_record(self, record: Record, *, if_absent: bool = False, now: str = "") -> bool:
        """Write ``record`` (insert or replace); True. With ``if_absent`` it writes only when no record
        ``(kind, key)`` unexpired at ``now`` exists (an expired one is replaced) and returns whether it
        wrote: of concurrent callers with one key, in any processes, exactly one gets True (how a
        replayed client-assertion id is detected). ``now`` "" counts no record as expired. Not to be
        called while the calling task holds a unit of work of this store (SQLite serialises record
        writes behind units of work and refuses that rather than wait for itself)."""
        ...

    async def delete_record(self, kind: str, key: str) -> bool:
        """Delete the record ``(kind, key)`` (expired or not); whether one was there."""
        ...

    async def list_records(self, kind: str, *, now: str) -> list[Record]:
        """The records of ``kind`` unexpired at ``now``, ordered by key (code point order)."""
        ...

    async def purge_records(self, now: str) -> int:
        """Delete every record expired at ``now``; how many were deleted."""
        ...
