"""Quantity search in canonical UCUM units (https://hl7.org/fhir/R4/search.html#quantity): a search
``5.4|http://unitsofmeasure.org|mg`` finds 0.0054 g and 5400 ug, with every prefix, on SQLite and on
MongoDB (the session's SecantusDB) and in the in-memory matcher (what Subscription criteria use), also
through ``_filter`` and composites; searches without system and code, or with a unit UCUM does not
read, are what they were. An SQLite database indexed before canonical forms existed gets them when it
is opened."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.match import Matcher
from fhir_exchange.search.params import quantity
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import NUM_MAX
from fhir_exchange.store.port import ANY, ResourceStore, ResourceVersion
from fhir_exchange.store.sqlite import SqliteStore
from tests.mongo_server import module_db_url, mongo_url, wipe  # noqa: F401 - fixtures

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def obs(id: str, value: float, code: str | None, system: str | None = UCUM, unit: str | None = None,
        loinc: str = "2345-7") -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if system:
        q["system"] = system
    if code:
        q["code"] = code
    if unit or code:
        q["unit"] = unit or code
    return {"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, "valueQuantity": q,
            "meta": {"versionId": "1", "lastUpdated": f"2024-01-01T00:00:{len(id):02d}.000Z"}}


DATA = [
    obs("mg", 5.4, "mg"),
    obs("g", 0.0054, "g"),
    obs("ug", 5400, "ug"),
    obs("mg6", 6, "mg"),
    obs("kg", 1, "kg"),
    obs("mL", 5.4, "mL"),  # another dimension
    obs("plain", 5.4, None, None, "mg"),  # a unit text only
    obs("other", 5.4, "mg", "urn:other"),  # mg of another system: not UCUM
    obs("lb", 1, "[lb_av]"),  # 453.59237 g
    obs("cel", 37, "Cel"),
    obs("kelvin", 37, "K"),
    obs("conc", 95, "mg/dL", loinc="2339-0"),  # 0.95 g/L
    obs("conc2", 0.95, "g/L", loinc="2339-0"),
]

CASES: list[tuple[str, set[str]]] = [
    ("value-quantity=5.4|http://unitsofmeasure.org|mg", {"mg", "g", "ug"}),
    ("value-quantity=0.0054|http://unitsofmeasure.org|g", {"mg", "g", "ug"}),
    ("value-quantity=5400|http://unitsofmeasure.org|ug", {"mg", "g", "ug"}),
    ("value-quantity=gt5|http://unitsofmeasure.org|mg", {"mg", "g", "ug", "mg6", "kg", "lb"}),
    ("value-quantity=lt5.5|http://unitsofmeasure.org|mg", {"mg", "g", "ug"}),
    ("value-quantity=ne5.4|http://unitsofmeasure.org|mg", {"mg6", "kg", "lb"}),
    ("value-quantity=ap5.6|http://unitsofmeasure.org|mg", {"mg", "g", "ug", "mg6"}),
    ("value-quantity=ge1|http://unitsofmeasure.org|kg", {"kg"}),
    ("value-quantity=le1.5|http://unitsofmeasure.org|g", {"mg", "g", "ug", "mg6"}),
    ("value-quantity=sa1000|http://unitsofmeasure.org|mg", {"kg", "lb"}),
    ("value-quantity=eb2|http://unitsofmeasure.org|g", {"mg", "g", "ug", "mg6"}),
    ("value-quantity=1|http://unitsofmeasure.org|[lb_av]", {"lb"}),
    ("value-quantity=453.6|http://unitsofmeasure.org|g", {"lb"}),
    ("value-quantity=0.95|http://unitsofmeasure.org|g/L", {"conc", "conc2"}),
    ("value-quantity=95|http://unitsofmeasure.org|mg/dL", {"conc", "conc2"}),
    # Not converted: no system and code, another system, units that are not a factor.
    ("value-quantity=5.4||mg", {"mg", "plain", "other"}),
    ("value-quantity=5.4", {"mg", "mL", "plain", "other"}),
    ("value-quantity=5.4|urn:other|mg", {"other"}),
    ("value-quantity=37|http://unitsofmeasure.org|Cel", {"cel"}),
    ("value-quantity=37|http://unitsofmeasure.org|K", {"kelvin"}),
    ("value-quantity=5.4|http://unitsofmeasure.org|nonsense", set()),
    # Composites and _filter take the same path.
    ("code-value-quantity=http://loinc.org|2345-7$5.4|http://unitsofmeasure.org|mg", {"mg", "g", "ug"}),
    ("code-value-quantity=2339-0$gt900|http://unitsofmeasure.org|mg/L", {"conc", "conc2"}),
    ('_filter=value-quantity eq "5.4|http://unitsofmeasure.org|mg"', {"mg", "g", "ug"}),
    ('_filter=value-quantity gt "5|http://unitsofmeasure.org|mg" and value-quantity lt "1|http://unitsofmeasure.org|g"',
     {"mg", "g", "ug", "mg6"}),
    ("value-quantity:missing=false&value-quantity=gt0.4|http://unitsofmeasure.org|kg&_sort=-value-quantity",
     {"kg", "lb"}),
]


def _query(defs: Definitions, raw: str) -> Any:
    params = [tuple(p.split("=", 1)) for p in raw.split("&")] if not raw.startswith("_filter") else [
        tuple(raw.split("=", 1))]
    return parse(defs, "Observation", params, default_count=50, max_count=100, strict=True)


@asynccontextmanager
async def sqlite_store(path: Path, defs: Definitions) -> AsyncIterator[ResourceStore]:
    s = SqliteStore(path, make_indexer(defs), readers=1)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@asynccontextmanager
async def mongo_store(url: str, defs: Definitions) -> AsyncIterator[ResourceStore]:
    from fhir_exchange.store.mongo import MongoStore

    wipe(url)
    s = MongoStore(url, make_indexer(defs), resource_types=("Observation",))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _load(store: ResourceStore, resources: list[dict[str, Any]]) -> None:
    async with store.transaction() as uow:
        for r in resources:
            v = ResourceVersion(r["resourceType"], r["id"], 1, r["meta"]["lastUpdated"], False, orjson.dumps(r), "PUT")
            await uow.put(v, r, expected_version=ANY)


def test_a_range_is_indexed_in_canonical_units() -> None:
    """A Range takes its unit from its bounds; an open end stays open."""
    (e,) = quantity.extract("x", ({"low": {"value": 1, "system": UCUM, "code": "g"},
                                   "high": {"value": 2.5, "system": UCUM, "code": "g"}}, "Range"))
    assert (e.canon, e.canon_low, e.canon_high) == ("mass", 1.0, 2.5)
    (e,) = quantity.extract("x", ({"low": {"value": 1500, "system": UCUM, "code": "mg"}}, "Range"))
    assert (e.canon, e.canon_low, e.canon_high) == ("mass", 1.5, NUM_MAX)
    (e,) = quantity.extract("x", ({"value": 37, "system": UCUM, "code": "Cel"}, "Quantity"))
    assert e.canon is None  # not a factor: 37 Cel is not 37 K
    v = quantity.parse_value("ap1500|http://unitsofmeasure.org|mg", None, "x")
    assert v.canon == "mass" and v.canon_number is not None and v.canon_number.value == 1.5
    assert quantity.match(e := quantity.extract("x", ({"low": {"value": 1, "system": UCUM, "code": "g"}, "high": {
        "value": 2, "system": UCUM, "code": "g"}}, "Range"))[0], v, None)
    assert not quantity.match(e, quantity.parse_value("1500|http://unitsofmeasure.org|mg", None, "x"), None)


def test_the_matcher_converts(definitions: Definitions) -> None:
    """The matcher (the oracle of the stores, and what Subscription criteria run on) on its own."""
    m = Matcher(definitions, DATA)
    for raw, want in CASES:
        got = m.search(_query(definitions, raw)).matches
        assert {i for _t, i in got} == want, raw


@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
async def test_stores_convert_like_the_matcher(backend: str, definitions: Definitions, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    store = (sqlite_store(tmp_path / "s.db", definitions) if backend == "sqlite"
             else mongo_store(request.getfixturevalue("module_db_url"), definitions))
    m = Matcher(definitions, DATA)
    async with store as s:
        await _load(s, DATA)
        for raw, want in CASES:
            q = _query(definitions, raw)
            got = await s.search(q)
            assert [(r.type, r.id) for r in got.matches] == m.search(q).matches, (backend, raw)
            assert {r.id for r in got.matches} == want, (backend, raw)
    sorted_ids = [i for _t, i in m.search(_query(definitions, CASES[-1][0])).matches]
    assert sorted_ids == ["kg", "lb"]  # sorting stays on the values as written (1 kg before 1 [lb_av])


async def test_sqlite_database_indexed_before_gets_canonical_forms(definitions: Definitions, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with sqlite_store(path, definitions) as s:
        await _load(s, DATA)
    # Make it what an older release left: no canonical columns, an older schema version.
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX search_quantity_c1")
    for col in ("canon", "canon_low", "canon_high"):
        conn.execute(f"ALTER TABLE search_quantity DROP COLUMN {col}")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    async with sqlite_store(path, definitions) as s:
        for raw, want in CASES[:6]:
            got = await s.search(_query(definitions, raw))
            assert {r.id for r in got.matches} == want, raw
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM search_quantity WHERE canon IS NOT NULL").fetchone()[0] >= 10
    conn.close()


def test_subscription_criteria_convert(definitions: Definitions) -> None:
    """A Subscription's criteria are judged by the matcher on the changed resource alone."""
    from fhir_exchange.notify.criteria import Evaluator, parse_criteria

    ev = Evaluator(definitions)
    ev.load(obs("g", 0.0054, "g"))
    assert ev.matches(parse_criteria(definitions, "Observation?value-quantity=5.4|http://unitsofmeasure.org|mg"))
    assert ev.matches(parse_criteria(definitions, "Observation?_filter=value-quantity%20ge%20"
                                                  "%225|http://unitsofmeasure.org|mg%22"))
    assert not ev.matches(parse_criteria(definitions, "Observation?value-quantity=gt6|http://unitsofmeasure.org|mg"))
    assert not ev.matches(parse_criteria(definitions, "Observation?value-quantity=5.4||mg"))  # no system: as written
