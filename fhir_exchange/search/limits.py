"""Limits on what one search may ask (https://hl7.org/fhir/R4/search.html#errors): a query beyond one
of them is refused before it reaches a store, as a 400 OperationOutcome (issue code ``too-costly``)
that names the limit and the setting that raises it.

Why: every criterion, OR value, sort key, chain step and ``_has`` step becomes a subquery or a term of
the store's query; a few thousand of them exceed SQLite's expression depth and column limits (a 500) or
run for minutes on either store. The defaults are far above what a clinical client sends (HAPI FHIR and
Blaze clients send a handful of criteria) and far below where the stores slow down.

The limits are process-wide: the server sets them once from its settings (:func:`configure`), and
:func:`fhir_exchange.search.parse.parse` reads them (:func:`current`) unless a caller passes its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fhir_exchange.errors import FhirError, invalid


@dataclass(frozen=True, slots=True)
class SearchLimits:
    max_criteria: int = 64  # search parameters ANDed in one query (result parameters not counted)
    max_values: int = 100  # comma-separated (OR) values of one criterion
    max_values_total: int = 500  # OR values over all the criteria of the query
    max_sort_keys: int = 8  # keys of _sort
    max_chain_depth: int = 3  # reference steps of one chained parameter (subject.organization.name: 2)
    max_has_depth: int = 2  # nested _has: steps of one reverse-chained parameter
    max_includes: int = 20  # _include and _revinclude parameters together
    max_query_length: int = 8192  # characters of all the names and values of the query together
    max_filter_depth: int = 8  # nested parentheses (and ``not``) of one _filter expression

    @classmethod
    def from_settings(cls, settings: Any) -> SearchLimits:
        """From the ``search_<limit>`` fields of :class:`fhir_exchange.settings.Settings`."""
        return cls(**{f.name: int(getattr(settings, f"search_{f.name}")) for f in fields(cls)})


SETTING = {f.name: f"FHIR_EXCHANGE_SEARCH_{f.name.upper()}" for f in fields(SearchLimits)}

_current = SearchLimits()


def configure(limits: SearchLimits) -> None:
    global _current
    _current = limits


def current() -> SearchLimits:
    return _current


def exceeded(limit: str, what: str, found: int, allowed: int, expression: str) -> FhirError:
    """The 400 of a query beyond ``limit`` (a field of :class:`SearchLimits`)."""
    return invalid(f"Search refused: {what} ({found}) exceeds the limit {limit} = {allowed} "
                   f"(setting {SETTING[limit]})", expression, code="too-costly")


def check(limits: SearchLimits, limit: str, what: str, found: int, expression: str) -> None:
    allowed: int = getattr(limits, limit)
    if found > allowed:
        raise exceeded(limit, what, found, allowed, expression)
