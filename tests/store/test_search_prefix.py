"""Search prefixes (https://hl7.org/fhir/R4/search.html#prefix), written once in
:mod:`fhir_exchange.search.prefix`: for random search values and every prefix, the condition's three
evaluations select exactly the same indexed ranges — SQLite (its SQL run on a real table), MongoDB (its
filter run on the session's SecantusDB, inside ``$elemMatch`` as the store runs it) and the matcher
(:func:`prefix.holds`) — and those are the ranges the spec's literal definitions select (``ge`` is
"gt or eq" taken literally here, which the stores' one-comparison-per-side form must equal)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.collection import Collection

from fhir_exchange.search import prefix
from fhir_exchange.search.params.number import value_of
from fhir_exchange.search.query import PREFIXES, DateValue, NumberValue
from tests.mongo_server import module_db_url, mongo_url  # noqa: F401 - fixtures

# Indexed ranges on a small grid, so that searched values often meet their ends exactly.
DATE_ROWS = [(lo, hi) for lo in range(7) for hi in range(lo + 1, 8)]  # half-open [lo, hi)
POINTS = [0.0, 0.5, 0.95, 1.0, 1.05, 1.5, 2.0, 2.5, 3.0]
NUMBER_ROWS = [(lo, hi) for lo in POINTS for hi in POINTS if lo <= hi]  # closed [lo, hi]


def date_literal(p: str, lo: int, hi: int, v: DateValue) -> bool:
    """search.html#prefix for dates, word for word (R = [lo, hi), S = [v.low, v.high))."""
    eq = v.low <= lo and hi <= v.high
    gt, lt = hi > v.high, lo < v.low
    return {"eq": eq, "ne": not eq, "gt": gt, "lt": lt, "ge": gt or eq, "le": lt or eq, "sa": lo >= v.high,
            "eb": hi <= v.low, "ap": lo < v.high and hi > v.low}[p]


def number_literal(p: str, lo: float, hi: float, v: NumberValue) -> bool:
    """search.html#number (R = [lo, hi]; eq/ne on the precision range, the others on the exact value)."""
    eq = v.low <= lo and hi < v.high
    a, b = min(v.low, v.value - abs(v.value) / 10), max(v.high, v.value + abs(v.value) / 10)
    return {"eq": eq, "ne": not eq, "gt": hi > v.value, "lt": lo < v.value, "ge": hi >= v.value,
            "le": lo <= v.value, "sa": lo > v.value, "eb": hi < v.value, "ap": lo <= b and hi >= a}[p]


@pytest.fixture(scope="module")
def tables() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    for name, rows in (("d", DATE_ROWS), ("n", NUMBER_ROWS)):
        conn.execute(f"CREATE TABLE {name} (id INTEGER, low, high)")
        conn.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)", [(i, lo, hi) for i, (lo, hi) in enumerate(rows)])
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def collections(module_db_url: str) -> Iterator[dict[str, Collection[dict[str, Any]]]]:  # noqa: F811
    with MongoClient(module_db_url, serverSelectionTimeoutMS=5000) as client:
        db = client.get_default_database()
        out: dict[str, Collection[dict[str, Any]]] = {}
        for name, rows in (("d", DATE_ROWS), ("n", NUMBER_ROWS)):
            db[name].delete_many({})
            # As the store keeps them: an array of ranges per document (one each here).
            db[name].insert_many([{"_id": i, "r": [{"p": "x", "lo": lo, "hi": hi}]} for i, (lo, hi) in enumerate(rows)])
            out[name] = db[name]
        yield out


def _agree(c: prefix.Condition, rows: list[tuple[Any, Any]], literal: Callable[[Any, Any], bool],
           conn: sqlite3.Connection, table: str, coll: Collection[dict[str, Any]]) -> None:
    want = {i for i, (lo, hi) in enumerate(rows) if literal(lo, hi)}
    matcher = {i for i, (lo, hi) in enumerate(rows) if prefix.holds(c, lo, hi)}
    cond, args = prefix.sql(c, "t.low", "t.high")
    sql = {r[0] for r in conn.execute(f"SELECT t.id FROM {table} t WHERE {cond}", args)}
    mongo = {d["_id"] for d in coll.find({"r": {"$elemMatch": {"p": "x", **prefix.mongo(c)}}}, {"_id": 1})}
    assert matcher == want, (c, sorted(matcher ^ want))
    assert sql == want, (cond, args, sorted(sql ^ want))
    assert mongo == want, (prefix.mongo(c), sorted(mongo ^ want))


SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(p=st.sampled_from(PREFIXES), low=st.integers(-1, 8), width=st.integers(1, 4))
def test_date_prefixes_agree(tables: sqlite3.Connection, collections: dict[str, Any], p: str, low: int,
                             width: int) -> None:
    v = DateValue(p, low, low + width)
    _agree(prefix.for_date(v), DATE_ROWS, lambda lo, hi: date_literal(p, lo, hi, v), tables, "d", collections["d"])


@SETTINGS
@given(p=st.sampled_from(PREFIXES), raw=st.sampled_from(["0", "1", "1.0", "1.00", "1e0", "1.5", "2", "2.50", "-1",
                                                          "3", "0.95", "10"]))
def test_number_prefixes_agree(tables: sqlite3.Connection, collections: dict[str, Any], p: str, raw: str) -> None:
    v = value_of(p, Decimal(raw))
    _agree(prefix.for_number(v), NUMBER_ROWS, lambda lo, hi: number_literal(p, lo, hi, v), tables, "n",
           collections["n"])


@SETTINGS
@given(p=st.sampled_from(PREFIXES), raw=st.sampled_from(["1", "1.5", "2.0", "250", "0.5"]),
       factor=st.sampled_from([Decimal("0.001"), Decimal(1000), Decimal("0.5")]))
def test_scaled_numbers_agree(tables: sqlite3.Connection, collections: dict[str, Any], p: str, raw: str,
                              factor: Decimal) -> None:
    """A quantity's canonical value: the number and its precision range scaled by the unit's factor."""
    v = value_of(p, Decimal(raw), factor)
    assert v.value == float(Decimal(raw) * factor)
    _agree(prefix.for_number(v), NUMBER_ROWS, lambda lo, hi: number_literal(p, lo, hi, v), tables, "n",
           collections["n"])


def test_sql_keeps_the_index_friendly_shapes() -> None:
    """The SQL the stores ran before the algebra was one value (plans depend on these shapes)."""
    assert prefix.sql(prefix.for_date(DateValue("eq", 1, 2)), "a.low", "a.high") == (
        "a.low >= ? AND a.high <= ?", [1, 2])
    assert prefix.sql(prefix.for_date(DateValue("ne", 1, 2)), "a.low", "a.high") == (
        "NOT (a.low >= ? AND a.high <= ?)", [1, 2])
    assert prefix.sql(prefix.for_date(DateValue("ge", 1, 2)), "a.low", "a.high") == (
        "(a.high > ? OR a.low >= ?)", [2, 1])
    assert prefix.mongo(prefix.for_date(DateValue("ne", 1, 2))) == {"$or": [{"lo": {"$lt": 1}}, {"hi": {"$gt": 2}}]}
    assert prefix.mongo(prefix.for_number(value_of("eq", Decimal(1)))) == {"lo": {"$gte": 0.5}, "hi": {"$lt": 1.5}}
