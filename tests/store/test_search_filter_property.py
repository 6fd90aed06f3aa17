"""Property test: random ``_filter`` expressions (https://hl7.org/fhir/R4/search_filter.html) over a few
parameters (strings in every mode, tokens, dates with prefixes, quantities, ``pr``, ``_id``, references
and chains), nested ``and``/``or``/``not`` with and without parentheses, sometimes with plain parameters
beside them and under a random visibility, give on every store exactly what the in-memory matcher gives.

It reuses the generated resources, visibilities and store adapters of the plain search property
(tests/store/test_search_property.py): SQLite on a temporary file (both sort strategies) and MongoDB on
``MONGODB_URL`` or the session's SecantusDB."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_exchange.definitions import Definitions
from tests.mongo_server import module_db_url, mongo_url  # noqa: F401 - fixtures
from tests.store.test_search_property import (  # noqa: F401 - fixtures
    NAMES,
    StoreAdapter,
    defs,
    fhir_date,
    run_property,
    scenario,
    store_adapter,
    visibilities,
)

FRAGMENTS = [*NAMES, "mu", "MÜL", "ller", "준", "en", "e"]


def _quoted(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def patient_leaf(draw: st.DrawFn) -> str:
    options = [
        lambda: f"gender {draw(st.sampled_from(['eq', 'ne']))} {draw(st.sampled_from(['male', 'female', 'other']))}",
        lambda: (f"{draw(st.sampled_from(['name', 'family', 'given']))} "
                 f"{draw(st.sampled_from(['eq', 'ne', 'co', 'sw', 'ew']))} "
                 f"{_quoted(draw(st.sampled_from(FRAGMENTS)))}"),
        lambda: (f"birthdate {draw(st.sampled_from(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']))} "
                 f"{draw(fhir_date(with_time=False))}"),
        lambda: f"active {draw(st.sampled_from(['eq', 'ne']))} {draw(st.sampled_from(['true', 'false']))}",
        lambda: (f"{draw(st.sampled_from(['active', 'birthdate', 'name', 'gender']))} pr "
                 f"{draw(st.sampled_from(['true', 'false']))}"),
        lambda: f"identifier eq {draw(st.sampled_from(['urn:mrn|1', '2', 'urn:x|3']))}",
        lambda: f"_id {draw(st.sampled_from(['eq', 'ne']))} p{draw(st.integers(0, 3))}",
    ]
    return str(draw(st.sampled_from(options))())


@st.composite
def observation_leaf(draw: st.DrawFn) -> str:
    options = [
        lambda: f"status {draw(st.sampled_from(['eq', 'ne']))} {draw(st.sampled_from(['final', 'preliminary']))}",
        lambda: (f"code {draw(st.sampled_from(['eq', 'ne']))} "
                 f"{draw(st.sampled_from(['8480-6', 'http://loinc.org|8462-4', 'urn:other|29463-7']))}"),
        lambda: (f"value-quantity {draw(st.sampled_from(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'ap']))} "
                 f"{draw(st.sampled_from(['80', '80.5', '120', '150.25']))}"),
        lambda: (f"date {draw(st.sampled_from(['ge', 'lt', 'eq', 'sa', 'eb']))} "
                 f"{draw(st.sampled_from(['1999', '2000-06', '2001-01-01']))}"),
        lambda: f"subject {draw(st.sampled_from(['eq', 'ne']))} Patient/p{draw(st.integers(0, 3))}",
        lambda: f"subject.gender {draw(st.sampled_from(['eq', 'ne']))} {draw(st.sampled_from(['male', 'female']))}",
        lambda: (f"subject.name {draw(st.sampled_from(['eq', 'co', 'sw', 'ew']))} "
                 f"{_quoted(draw(st.sampled_from(FRAGMENTS)))}"),
        lambda: (f"{draw(st.sampled_from(['subject', 'value-quantity', 'code']))} pr "
                 f"{draw(st.sampled_from(['true', 'false']))}"),
    ]
    return str(draw(st.sampled_from(options))())


def expression(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Nested and/or/not; a sub-expression is parenthesised when needed, and sometimes when not."""
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        def group(draw: st.DrawFn, e: str) -> str:
            return f"({e})" if (" and " in e or " or " in e) and draw(st.integers(0, 2)) else e

        @st.composite
        def binary(draw: st.DrawFn) -> str:
            op = draw(st.sampled_from(["and", "or"]))
            return f"{group(draw, draw(inner))} {op} {group(draw, draw(inner))}"

        return st.one_of(binary(), inner.map(lambda e: f"not ({e})"))

    return st.recursive(leaf, extend, max_leaves=5)


@st.composite
def filter_query(draw: st.DrawFn, type: str) -> list[tuple[str, str]]:
    leaf = patient_leaf() if type == "Patient" else observation_leaf()
    params = [("_filter", draw(expression(leaf)))]
    if draw(st.integers(0, 3)) == 0:  # ANDed with a plain parameter
        params.append(("gender", "male,female") if type == "Patient" else ("status", "final"))
    if draw(st.booleans()):
        params.append(("_sort", draw(st.sampled_from(["_id", "-birthdate", "name"] if type == "Patient"
                                                      else ["_id", "-value-quantity", "date"]))))
    if draw(st.booleans()):
        params += [("_count", str(draw(st.integers(1, 4)))), ("_offset", str(draw(st.integers(0, 2))))]
    return params


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(sc=scenario(), pq=st.lists(st.tuples(filter_query("Patient"), visibilities), min_size=1, max_size=4),
       oq=st.lists(st.tuples(filter_query("Observation"), visibilities), min_size=1, max_size=4))
def test_filter_store_equals_matcher(store_adapter: StoreAdapter, defs: Definitions,  # noqa: F811
                                     sc: Any, pq: Any, oq: Any) -> None:
    run_property(store_adapter, defs, sc[0], sc[1], pq, oq, [])


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(sc=scenario(), pq=st.lists(st.tuples(filter_query("Patient"), visibilities), min_size=1, max_size=6),
       oq=st.lists(st.tuples(filter_query("Observation"), visibilities), min_size=1, max_size=6))
def test_filter_store_equals_matcher_long(store_adapter: StoreAdapter, defs: Definitions,  # noqa: F811
                                          sc: Any, pq: Any, oq: Any) -> None:
    run_property(store_adapter, defs, sc[0], sc[1], pq, oq, [])
