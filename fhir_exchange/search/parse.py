"""Parse FHIR search parameters (search.html) into a :class:`SearchQuery`. Pure: no store access."""

from __future__ import annotations

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import invalid
from fhir_exchange.search.query import Param, SearchQuery

RESULT_PARAMS = frozenset({"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_format",
                           "_pretty", "_include", "_revinclude", "_contained", "_containedType"})


def parse(defs: Definitions, type: str | None, params: list[tuple[str, str]], *,
          default_count: int = 50, max_count: int = 1000, strict: bool = False) -> SearchQuery:
    count = default_count
    offset = 0
    out: list[Param] = []
    for name, value in params:
        code, _, modifier = name.partition(":")
        if code == "_count":
            if not value.isdigit():
                raise invalid(f"Invalid _count '{value}'", "_count")
            count = min(int(value), max_count)
            continue
        if code == "_offset":
            if not value.isdigit():
                raise invalid(f"Invalid _offset '{value}'", "_offset")
            offset = int(value)
            continue
        if code in RESULT_PARAMS:
            continue
        if code == "_id":
            out.append(Param("_id", "token", modifier or None, tuple(value.split(","))))
            continue
        sp = next((p for p in defs.search_parameters(type or "Resource") if p.get("code") == code), None)
        if sp is None or sp.get("type") != "token":
            if strict:
                raise invalid(f"Unknown or unsupported search parameter '{name}'", name)
            continue
        out.append(Param(code, "token", modifier or None, tuple(value.split(","))))
    return SearchQuery(type=type, params=tuple(out), count=count, offset=offset)
