"""Index extraction: the search values of a resource, per SearchParameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.store.port import IndexEntry, Indexer


def make_indexer(defs: Definitions) -> Indexer:
    def index(type: str, resource: dict[str, Any]) -> Sequence[IndexEntry]:
        out: list[IndexEntry] = []
        for ident in resource.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("value"):
                out.append(IndexEntry("identifier", "token", system=ident.get("system"), code=ident["value"]))
        return out

    return index
