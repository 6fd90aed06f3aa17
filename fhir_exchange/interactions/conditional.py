"""Conditional interactions' shared part: find the resources a criteria string matches.

https://hl7.org/fhir/R4/http.html#ccreate (and #cond-update, #3.1.0.7.1): the criteria are a search
query string; the search runs inside the caller's unit of work, and under a lock on the criteria, so
that concurrent identical conditional creates yield exactly one resource.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhir_exchange.errors import invalid
from fhir_exchange.interactions.services import Services
from fhir_exchange.search.parse import parse
from fhir_exchange.store.port import ResourceVersion, UnitOfWork


def criteria_pairs(criteria: str) -> list[tuple[str, str]]:
    criteria = criteria.strip().lstrip("?")
    if "?" in criteria:  # "Patient?identifier=..." as some clients send in If-None-Exist
        criteria = criteria.split("?", 1)[1]
    pairs = parse_qsl(criteria, keep_blank_values=True)
    if not pairs:
        raise invalid("Conditional criteria are empty")
    return pairs


async def matches(svc: Services, uow: UnitOfWork, type: str, pairs: list[tuple[str, str]]) -> list[ResourceVersion]:
    query = parse(svc.definitions, type, [*pairs, ("_count", "2")], strict=True,
                  default_count=2, max_count=2)
    await uow.lock_key(f"{type}?{sorted(pairs)}")
    result = await uow.search(query)
    return result.matches
