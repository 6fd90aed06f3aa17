"""Subscription criteria: a search URL (``Task?owner=Organization/1&status=requested``) parsed once into a
:class:`~fhir_exchange.search.query.SearchQuery` and evaluated against each changed resource with the
in-memory matcher (:mod:`fhir_exchange.search.match`), which implements the same search semantics as the
stores. The plain R4 ``Subscription.criteria`` and the Backport IG's ``backport-filter-criteria`` both
come here.

A notification is about one resource, so criteria that need other resources to be judged (chains,
``_has``) are refused when the Subscription is written; result parameters (``_count``, ``_sort``,
``_include``...) select pages and say nothing about a match, so they are ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.match import Matcher
from fhir_exchange.search.parse import RESULT_PARAMS, parse
from fhir_exchange.search.query import AllOf, AnyOf, Chain, Criterion, Has, Not, SearchQuery


class CriteriaError(ValueError):
    """The criteria cannot be used; the message says why."""


def _needs_other_resources(c: Criterion) -> bool:
    if isinstance(c, Chain | Has):
        return True
    if isinstance(c, AnyOf | AllOf):
        return any(_needs_other_resources(x) for x in c.criteria)
    if isinstance(c, Not):  # a _filter's not
        return _needs_other_resources(c.criterion)
    return False


def parse_criteria(defs: Definitions, criteria: str) -> SearchQuery:
    """``Type`` or ``Type?name=value&...`` as a query on ``Type`` (raises :class:`CriteriaError`)."""
    text = criteria.strip()
    type_, _, query_string = text.partition("?")
    type_ = type_.strip()
    if not defs.is_resource_type(type_):
        raise CriteriaError(f"'{criteria}' is not a search URL 'Type?name=value' of a resource type this server "
                            "knows")
    pairs = [(k, v) for k, v in parse_qsl(query_string, keep_blank_values=True)
             if k.partition(":")[0] not in RESULT_PARAMS]
    try:
        query = parse(defs, type_, pairs, strict=True)
    except FhirError as err:
        raise CriteriaError(f"'{criteria}': {err.diagnostics}") from None
    if query.lists:
        raise CriteriaError(f"'{criteria}': _list is not supported in subscription criteria (a notification is "
                            "judged on the changed resource alone)")
    if any(_needs_other_resources(c) for c in query.params):
        raise CriteriaError(f"'{criteria}': chained parameters and _has are not supported in subscription criteria "
                            "(a notification is judged on the changed resource alone)")
    return query


def invalid_criteria(message: str, where: str) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, message, (where,), code="invalid")


class Evaluator:
    """Judges criteria against one resource at a time (one matcher reused, so the index plans compiled
    for a type are kept)."""

    def __init__(self, defs: Definitions) -> None:
        self.matcher = Matcher(defs, [])
        self._key: tuple[str, str] | None = None

    def load(self, resource: dict[str, Any]) -> None:
        if self._key is not None:
            self.matcher.delete(*self._key)
        self._key = (str(resource["resourceType"]), str(resource["id"]))
        self.matcher.put(resource)

    def matches(self, query: SearchQuery) -> bool:
        """Whether the loaded resource meets every criterion of ``query`` (its type included)."""
        if self._key is None or query.type != self._key[0]:
            return False
        return all(self.matcher.matches(self._key, c) for c in query.params)
