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


# Result parameters select or shape a page; they never narrow what a condition matches, so they are
# dropped from the criteria (``_offset`` would otherwise hide matches, ``_count`` shrink them).
_NOT_CRITERIA = frozenset({"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_format", "_pretty",
                           "_include", "_revinclude", "_contained", "_containedType"})


async def matches(svc: Services, uow: UnitOfWork, type: str, pairs: list[tuple[str, str]]) -> list[ResourceVersion]:
    # A condition without criteria would match every resource of the type: a conditional delete, update
    # or patch of "DELETE [base]/Patient" must not touch whatever Patient happens to be alone.
    pairs = [(k, v) for k, v in pairs if k.split(":", 1)[0] not in _NOT_CRITERIA]
    if not pairs:
        raise invalid(f"A conditional interaction on {type} needs search criteria (none were given)")
    query = parse(svc.definitions, type, [*pairs, ("_count", "2")], strict=True,
                  default_count=2, max_count=2)
    await uow.lock_key(f"{type}?{sorted(pairs)}")
    result = await uow.search(query)
    return result.matches
