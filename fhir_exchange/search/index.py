"""Search index entries: the values extracted from a resource for its search parameters
(https://hl7.org/fhir/R4/search.html#table), which every store adapter writes beside the resource."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


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
    # quantity with a UCUM code: its canonical form (the dimension's key, the range in canonical units)
    canon: str | None = None
    canon_low: float | None = None
    canon_high: float | None = None


Indexer = Callable[[str, dict[str, Any]], Sequence[IndexEntry]]
"""Extracts the search index entries of a resource (type, resource) -> entries."""
