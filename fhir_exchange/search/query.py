"""The typed search query: what a FHIR search asks, independent of any store.

Parsing (``parse``) is pure; stores compile a :class:`SearchQuery` into their own query language.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Param:
    """One search parameter occurrence; its ``values`` are ORed, occurrences are ANDed."""

    code: str
    type: str  # SearchParameter.type, or "special" for _id and friends
    modifier: str | None
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    type: str | None  # None: system-level search across types
    params: tuple[Param, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    offset: int = 0
    total: str = "accurate"  # none | estimate | accurate
    types: tuple[str, ...] = ()  # _type, for system-level search
    include: tuple[str, ...] = field(default=())
    revinclude: tuple[str, ...] = field(default=())
