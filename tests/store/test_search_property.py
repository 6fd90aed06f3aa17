"""Property test: every store returns exactly what the in-memory matcher returns
(https://hl7.org/fhir/R4/search.html), for generated resources and generated queries: strings with
accents and Hangul, dates with precisions and time zones, tokens, quantities, references, chains,
``_has``, composites, ``:missing``/``:not``, sorting, paging and includes (with ``:iterate``),
``_text``/``_content`` words (narratives with markup, entities, accents and Hangul) and Location ``near``
(radii in every unit, across the antimeridian). Resources get random owners (a few institutions, or
none) and random grants (some expired, some replaced, some on resources that do not exist), and each
query a random visibility (none, or random institutions, shared types, instant and readable types:
every type, or a random subset of the generated ones, sometimes empty), which every store must
compile into every subquery exactly as the matcher applies it.

The same property runs once per store adapter (``store_adapter`` is parametrized): SQLite on a
temporary file (with both of its sort strategies), and MongoDB on ``MONGODB_URL`` or the session's
SecantusDB (tests/mongo_server.py), on a database of this module emptied before each example."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.index import Indexer
from fhir_exchange.search.match import Matcher
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import Visibility
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.port import ANY, Grant, ResourceStore, ResourceVersion
from fhir_exchange.store.sqlite import SqliteStore
from tests.mongo_server import module_db_url, mongo_url, wipe  # noqa: F401 - fixtures

NAMES = ["Müller", "Muller", "müll", "Søren", "김민준", "김", "Élodie", "elo", "O'Brien", "Zoë"]
SYSTEMS = ["http://loinc.org", "urn:other", None]
CODES = ["8480-6", "8462-4", "29463-7"]
UNITS = [("mm[Hg]", "mmHg"), ("kg", "kg")]
ZONES = ["Z", "+09:00", "-05:00", ""]
MARKUP = ["<b>{}</b>", "<p>{}</p>", "{}&amp;x", "<td>{}</td><td>Zo&#235;</td>", "{}<br/>", "<!-- {} -->"]
# Points a few to a few thousand km apart, two of them on either side of the antimeridian.
POINTS = [(37.5665, 126.978), (37.4563, 126.7052), (35.1796, 129.0756), (-17.7134, 178.065),
          (-13.759, -172.1046), (0.0, 0.0), (0.3, 0.2), (89.5, 10.0)]
NEAR = ["37.5665|126.978|10|km", "37.5665|126.978|30", "37.5665|126.978", "37.5|126.9|28000|m",
        "37.5665|126.978|210|[mi_i]", "-17.7134|178.065|1200|km", "-13.7|-172.1|1|km", "0|0|40",
        "0|0|40000|m", "90|0|100", "35.1796|129.0756|1,0.3|0.2|1", "0.15|0.1|25|km"]


@st.composite
def fhir_date(draw: st.DrawFn, with_time: bool = True) -> str:
    y = draw(st.integers(1999, 2001))
    precision = draw(st.integers(0, 4 if with_time else 2))
    s = f"{y}"
    if precision >= 1:
        s += f"-{draw(st.integers(1, 12)):02d}"
    if precision >= 2:
        s += f"-{draw(st.integers(1, 28)):02d}"
    if precision >= 3:
        s += f"T{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 30, 59])):02d}"
        if precision >= 4:
            s += f":{draw(st.integers(0, 59)):02d}"
            if draw(st.booleans()):
                s += f".{draw(st.integers(0, 999)):03d}"
        else:
            s += ":00"
        s += draw(st.sampled_from(ZONES[:3]))  # a time needs a zone in resources
    return s


@st.composite
def patient(draw: st.DrawFn, i: int) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "id": f"p{i}"}
    if draw(st.booleans()):
        p["name"] = [{"family": draw(st.sampled_from(NAMES)),
                      "given": draw(st.lists(st.sampled_from(NAMES), max_size=2))}]
    if draw(st.booleans()):
        p["gender"] = draw(st.sampled_from(["male", "female", "other"]))
    if draw(st.booleans()):
        p["birthDate"] = draw(fhir_date(with_time=False))
    if draw(st.booleans()):
        p["active"] = draw(st.booleans())
    if draw(st.booleans()):
        p["identifier"] = [{"system": draw(st.sampled_from(["urn:mrn", "urn:x"])),
                            "value": draw(st.sampled_from(["1", "2", "3"]))}]
    if draw(st.booleans()):
        parts = [draw(st.sampled_from(MARKUP)).format(draw(st.sampled_from(NAMES)))
                 for _ in range(draw(st.integers(1, 3)))]
        p["text"] = {"status": "generated",
                     "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{" ".join(parts)}</div>'}
    return p


@st.composite
def observation(draw: st.DrawFn, i: int, n_patients: int) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": f"o{i}",
                         "status": draw(st.sampled_from(["final", "preliminary"]))}
    if draw(st.booleans()):
        coding = {"code": draw(st.sampled_from(CODES))}
        system = draw(st.sampled_from(SYSTEMS))
        if system:
            coding["system"] = system
        o["code"] = {"coding": [coding]}
    if n_patients and draw(st.booleans()):
        o["subject"] = {"reference": f"Patient/p{draw(st.integers(0, n_patients - 1))}"}
    choice = draw(st.integers(0, 2))
    if choice == 1:
        o["effectiveDateTime"] = draw(fhir_date())
    elif choice == 2:
        period: dict[str, str] = {}
        if draw(st.booleans()):
            period["start"] = draw(fhir_date())
        if draw(st.booleans()):
            period["end"] = draw(fhir_date())
        o["effectivePeriod"] = period
    if draw(st.booleans()):
        code, unit = draw(st.sampled_from(UNITS))
        o["valueQuantity"] = {"value": draw(st.sampled_from([60, 80, 80.5, 120, 150.25])), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": code}
    if draw(st.booleans()):
        o["note"] = [{"text": " ".join(draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)))}]
    return o


@st.composite
def location(draw: st.DrawFn, i: int) -> dict[str, Any]:
    loc: dict[str, Any] = {"resourceType": "Location", "id": f"l{i}", "name": draw(st.sampled_from(NAMES))}
    if draw(st.integers(0, 3)):
        lat, lon = draw(st.sampled_from(POINTS))
        loc["position"] = {"latitude": lat, "longitude": lon}
    return loc


@st.composite
def dataset(draw: st.DrawFn) -> list[dict[str, Any]]:
    n_p = draw(st.integers(0, 6))
    n_o = draw(st.integers(0, 8))
    n_l = draw(st.integers(0, 5))
    out = ([draw(patient(i)) for i in range(n_p)] + [draw(observation(i, n_p)) for i in range(n_o)]
           + [draw(location(i)) for i in range(n_l)])
    # Insertion order interleaves types; each resource gets a lastUpdated.
    order = draw(st.permutations(out))
    for j, r in enumerate(order):
        r["meta"] = {"versionId": "1", "lastUpdated": f"2024-01-01T00:00:{j:02d}.000Z"}
    return list(order)


INSTITUTIONS = ["a", "b", "c"]
INSTANTS = ["2024-06-01T00:00:00.000Z", "2024-07-01T00:00:00.000Z", "2024-08-01T00:00:00.000Z"]
TYPES = ["Patient", "Observation", "Location"]


@st.composite
def access(draw: st.DrawFn, data: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], str | None],
                                                                   list[tuple[str, list[Grant]]]]:
    """Owners of the resources, and grant writes in order: (basis, grants) replacing that basis's set."""
    owners = {(r["resourceType"], r["id"]): draw(st.sampled_from([*INSTITUTIONS, None])) for r in data}
    keys = [*owners, ("Patient", "p99"), ("Observation", "o99")]  # grants on resources that do not exist too
    grant = st.builds(Grant, st.sampled_from(INSTITUTIONS), st.just(""), st.just(""),
                      st.sampled_from([None, *INSTANTS]))
    writes: list[tuple[str, list[Grant]]] = []
    for _ in range(draw(st.integers(0, 4))):
        grants = [dataclasses.replace(g, type=k[0], id=k[1])
                  for g, k in draw(st.lists(st.tuples(grant, st.sampled_from(keys)), max_size=5))]
        writes.append((draw(st.sampled_from(["consult/1", "consult/2"])), grants))
    return owners, writes


# The caller's readable types (its scopes): every type, or a subset of the generated ones (sometimes
# none, sometimes all of them: the same results as every type), often one end of the Observation ->
# Patient references only (what chains, _has and includes must not cross).
readable_types = st.one_of(st.none(), st.frozensets(st.sampled_from(TYPES)),
                           st.sampled_from([frozenset({"Observation"}), frozenset({"Patient", "Location"})]))
# Mostly one or two institutions and no shared type (where visibility tells resources apart), sometimes
# none at all (nothing visible but grants... which need an institution: nothing) or everything shared.
visibilities = st.one_of(
    st.none(),
    st.builds(Visibility, st.frozensets(st.sampled_from(INSTITUTIONS), min_size=1, max_size=2),
              st.sampled_from([frozenset(), frozenset(), frozenset(), *(frozenset({t}) for t in TYPES)]),
              st.sampled_from(INSTANTS), readable_types),
    st.builds(Visibility, st.frozensets(st.sampled_from(INSTITUTIONS), max_size=2),
              st.frozensets(st.sampled_from(TYPES)), st.sampled_from(INSTANTS), readable_types),
)


def date_param(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]))
    return prefix + draw(fhir_date()).replace("+", "%2B")


@st.composite
def patient_query(draw: st.DrawFn) -> list[tuple[str, str]]:
    options = [
        lambda: (draw(st.sampled_from(["name", "family", "given", "name:exact", "name:contains"])),
                 draw(st.sampled_from([*NAMES, "mu", "MÜL", "ø", "민", "e"]))),
        lambda: (draw(st.sampled_from(["gender", "gender:not"])), draw(st.sampled_from(["male", "female,other"]))),
        lambda: ("birthdate", date_param(draw)),
        lambda: (draw(st.sampled_from(["active:missing", "birthdate:missing", "name:missing"])),
                 draw(st.sampled_from(["true", "false"]))),
        lambda: ("identifier", draw(st.sampled_from(["urn:mrn|1", "1", "|1", "urn:x|", "2,3"]))),
        lambda: ("active", draw(st.sampled_from(["true", "false"]))),
        lambda: ("_has:Observation:subject:code", draw(st.sampled_from(CODES))),
        lambda: ("_has:Observation:patient:value-quantity", draw(st.sampled_from(["gt80", "le80.5"]))),
        lambda: ("_has:Observation:subject:status", draw(st.sampled_from(["final", "final,preliminary"]))),
        lambda: ("_id", draw(st.sampled_from(["p0", "p1,p2"]))),
        lambda: (draw(st.sampled_from(["_text", "_text:exact", "_text:contains", "_content", "_content:exact",
                                       "_text:missing"])),
                 draw(st.sampled_from([*NAMES, "mu", "MÜL", "ø", "민", "e", "x", "zoe", "true", "brien"]))),
    ]
    params = [draw(st.sampled_from(options))() for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["name", "-name", "birthdate", "-birthdate", "gender", "_id",
                                               "-_lastUpdated"]), min_size=1, max_size=2, unique=True))
        params.append(("_sort", ",".join(keys)))
    if draw(st.booleans()):
        params.append(("_revinclude", "Observation:subject"))
        if draw(st.booleans()):  # back from those Observations to their subjects (seen: never twice)
            params.append(("_include:iterate", "Observation:subject"))
    return params


@st.composite
def observation_query(draw: st.DrawFn) -> list[tuple[str, str]]:
    options = [
        lambda: (draw(st.sampled_from(["code", "code:not"])),
                 draw(st.sampled_from([*CODES, "http://loinc.org|8480-6", "|8462-4", "urn:other|",
                                       "8480-6,29463-7"]))),
        lambda: ("date", date_param(draw)),
        lambda: ("value-quantity", draw(st.sampled_from(["80", "gt80", "lt120", "ap80", "ne80.5", "80.5",
                                                         "le150.25|http://unitsofmeasure.org|mm[Hg]",
                                                         "ge60||kg", "eb100", "sa100"]))),
        lambda: ("subject", draw(st.sampled_from(["Patient/p0", "p1", "Patient/p2,Patient/p3"]))),
        lambda: draw(st.sampled_from([("subject:Patient.name", "mul"), ("patient.family", "김"),
                                      ("subject:Patient.name", "elo"), ("subject:Patient.gender", "male"),
                                      ("subject:Patient.gender", "female,other"), ("patient.family", "male"),
                                      ("subject:Patient.name:missing", "false"), ("patient.active:missing", "true"),
                                      ("subject:Patient._has:Observation:subject:status", "final")])),
        lambda: ("code-value-quantity", draw(st.sampled_from(["8480-6$gt70", "http://loinc.org|8462-4$lt100",
                                                              "29463-7$80"]))),
        lambda: (draw(st.sampled_from(["subject:missing", "code:missing", "date:missing",
                                       "value-quantity:missing"])), draw(st.sampled_from(["true", "false"]))),
        lambda: ("status", draw(st.sampled_from(["final", "preliminary"]))),
        lambda: (draw(st.sampled_from(["_content", "_content:contains", "_text:missing"])),
                 draw(st.sampled_from(["mu", "김", "final", "elo", "8480", "loinc", "true"]))),
    ]
    params = [draw(st.sampled_from(options))() for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["date", "-date", "code", "value-quantity", "-value-quantity",
                                               "subject", "_id"]), min_size=1, max_size=2, unique=True))
        params.append(("_sort", ",".join(keys)))
    if draw(st.booleans()):
        params.append(("_include", "Observation:subject"))
        if draw(st.booleans()):  # the other Observations of those subjects
            params.append(("_revinclude:iterate", "Observation:subject"))
    if draw(st.booleans()):
        params.append(("_count", str(draw(st.integers(1, 4)))))
        params.append(("_offset", str(draw(st.integers(0, 4)))))
    return params


@st.composite
def location_query(draw: st.DrawFn) -> list[tuple[str, str]]:
    options = [
        lambda: ("near", draw(st.sampled_from(NEAR))),
        lambda: ("near:missing", draw(st.sampled_from(["true", "false"]))),
        lambda: (draw(st.sampled_from(["_content", "name"])), draw(st.sampled_from(["mu", "김", "elo"]))),
    ]
    params = [draw(st.sampled_from(options))() for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        params.append(("_sort", draw(st.sampled_from(["name", "-name", "_id"]))))
    if draw(st.booleans()):
        params.append(("_count", str(draw(st.integers(1, 4)))))
        params.append(("_offset", str(draw(st.integers(0, 4)))))
    return params


@st.composite
def visibility_query(draw: st.DrawFn, type: str) -> list[tuple[str, str]]:
    """Queries made of what visibility must reach inside: one chain or ``_has`` (broad, so that it
    matches), includes with ``:iterate``, and single-key sorts with small pages (SQLite's index walk)."""
    if type == "Observation":
        criteria = [("subject:Patient.gender", "male,female,other"), ("subject:Patient.name:missing", "false"),
                    ("patient._has:Observation:subject:status", "final,preliminary"), ("status", "final"),
                    ("subject:missing", "false")]
        sorts = ["date", "-date", "subject", "-subject", "value-quantity"]
        includes = [("_include", "Observation:subject"), ("_revinclude:iterate", "Observation:subject")]
    else:
        criteria = [("_has:Observation:subject:status", "final,preliminary"), ("_has:Observation:subject:status",
                    "final"), ("gender", "male,female,other"), ("name:missing", "false")]
        sorts = ["name", "-name", "birthdate", "-gender"]
        includes = [("_revinclude", "Observation:subject"), ("_include:iterate", "Observation:subject")]
    params = draw(st.lists(st.sampled_from(criteria), max_size=1))
    if draw(st.booleans()):
        params.append(("_sort", draw(st.sampled_from(sorts))))
    if draw(st.booleans()):
        params += [("_count", str(draw(st.integers(1, 3)))), ("_offset", str(draw(st.integers(0, 2))))]
    params += includes[:draw(st.integers(0, 2))]
    return params


@pytest.fixture
def defs(definitions: Definitions) -> Definitions:
    return definitions


def _unquote(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v.replace("%2B", "+")) for k, v in params]


# -- store adapters ----------------------------------------------------------------------------------

Variant = Callable[[], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def _plain() -> AsyncIterator[None]:
    yield


def _threshold(value: int) -> Variant:
    @asynccontextmanager
    async def run() -> AsyncIterator[None]:
        saved, search_sql.STREAM_THRESHOLD = search_sql.STREAM_THRESHOLD, value
        try:
            yield
        finally:
            search_sql.STREAM_THRESHOLD = saved
    return run


class StoreAdapter:
    """How the property gets an empty store, and the variants of its search to compare."""

    name = ""
    variants: tuple[Variant, ...] = (_plain,)

    def store(self, indexer: Indexer) -> AbstractAsyncContextManager[ResourceStore]:
        raise NotImplementedError


class SqliteAdapter(StoreAdapter):
    name = "sqlite"
    # Both SQL sort strategies: per-row sort values, and the streamed index walk that large results
    # take (forced here by a threshold of 0).
    variants = (_threshold(search_sql.STREAM_THRESHOLD), _threshold(0))

    @asynccontextmanager
    async def store(self, indexer: Indexer) -> AsyncIterator[ResourceStore]:
        with tempfile.TemporaryDirectory() as tmp:
            s = SqliteStore(Path(tmp) / "s.db", indexer, readers=1)
            await s.open()
            try:
                yield s
            finally:
                await s.close()


class MongoAdapter(StoreAdapter):
    name = "mongodb"

    def __init__(self, url: str) -> None:
        self.url = url

    @asynccontextmanager
    async def store(self, indexer: Indexer) -> AsyncIterator[ResourceStore]:
        from fhir_exchange.store.mongo import MongoStore

        wipe(self.url)  # collections and indexes stay: an example costs its documents only
        s = MongoStore(self.url, indexer, resource_types=("Patient", "Observation", "Location"))
        await s.open()
        try:
            yield s
        finally:
            await s.close()


@pytest.fixture(params=["sqlite", "mongodb"])
def store_adapter(request: pytest.FixtureRequest) -> StoreAdapter:
    if request.param == "sqlite":
        return SqliteAdapter()
    return MongoAdapter(request.getfixturevalue("module_db_url"))


Access = tuple[dict[tuple[str, str], str | None], list[tuple[str, list[Grant]]]]
Query = tuple[str, list[tuple[str, str]], Visibility | None]


async def _check(adapter: StoreAdapter, defs: Definitions, resources: list[dict[str, Any]], acc: Access,
                 queries: list[Query]) -> None:
    owners, grant_writes = acc
    async with adapter.store(make_indexer(defs)) as store:
        async with store.transaction() as uow:
            for r in resources:
                k = (r["resourceType"], r["id"])
                v = ResourceVersion(k[0], k[1], 1, r["meta"]["lastUpdated"], False, orjson.dumps(r), "PUT", owners[k])
                await uow.put(v, r, expected_version=ANY)
        for basis, grants in grant_writes:
            async with store.transaction() as uow:
                await uow.replace_grants(basis, grants)
        matcher = Matcher(defs, resources, owners)
        for basis, grants in grant_writes:
            matcher.replace_grants(basis, grants)
        for type, raw, vis in queries:
            try:
                query = parse(defs, type, _unquote(raw), default_count=50, max_count=100, strict=True)
            except FhirError:
                continue
            query = dataclasses.replace(query, visibility=vis)
            want = matcher.search(query)
            for n, variant in enumerate(adapter.variants):
                async with variant():
                    got = await store.search(query)
                assert [(m.type, m.id) for m in got.matches] == want.matches, (adapter.name, type, raw, vis, n)
                assert got.total == want.total, (adapter.name, type, raw, vis, n)
                assert [(m.type, m.id) for m in got.includes] == want.includes, (adapter.name, type, raw, vis, n)
                assert all(m.owner == owners[(m.type, m.id)] for m in [*got.matches, *got.includes])


def run_property(adapter: StoreAdapter, defs: Definitions, data: list[dict[str, Any]], acc: Access,
                 pq: list[tuple[list[tuple[str, str]], Visibility | None]],
                 oq: list[tuple[list[tuple[str, str]], Visibility | None]],
                 lq: list[tuple[list[tuple[str, str]], Visibility | None]]) -> None:
    queries = ([("Patient", q, v) for q, v in pq] + [("Observation", q, v) for q, v in oq]
               + [("Location", q, v) for q, v in lq])
    asyncio.run(_check(adapter, defs, data, acc, queries))


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Access]:
    data = draw(dataset())
    return data, draw(access(data))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(sc=scenario(), pq=st.lists(st.tuples(patient_query(), visibilities), max_size=4),
       oq=st.lists(st.tuples(observation_query(), visibilities), max_size=4),
       lq=st.lists(st.tuples(location_query(), visibilities), max_size=3))
def test_store_equals_matcher(store_adapter: StoreAdapter, defs: Definitions,
                              sc: tuple[list[dict[str, Any]], Access], pq: Any, oq: Any, lq: Any) -> None:
    run_property(store_adapter, defs, sc[0], sc[1], pq, oq, lq)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(sc=scenario(), pq=st.lists(st.tuples(visibility_query("Patient"), visibilities), min_size=1, max_size=5),
       oq=st.lists(st.tuples(visibility_query("Observation"), visibilities), min_size=1, max_size=5))
def test_store_equals_matcher_under_visibility(store_adapter: StoreAdapter, defs: Definitions,
                                               sc: tuple[list[dict[str, Any]], Access], pq: Any, oq: Any) -> None:
    run_property(store_adapter, defs, sc[0], sc[1], pq, oq, [])


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(sc=scenario(), pq=st.lists(st.tuples(patient_query(), visibilities), max_size=6),
       oq=st.lists(st.tuples(observation_query(), visibilities), max_size=6),
       lq=st.lists(st.tuples(location_query(), visibilities), max_size=4))
def test_store_equals_matcher_long(store_adapter: StoreAdapter, defs: Definitions,
                                   sc: tuple[list[dict[str, Any]], Access], pq: Any, oq: Any, lq: Any) -> None:
    run_property(store_adapter, defs, sc[0], sc[1], pq, oq, lq)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(sc=scenario(), pq=st.lists(st.tuples(visibility_query("Patient"), visibilities), min_size=1, max_size=6),
       oq=st.lists(st.tuples(visibility_query("Observation"), visibilities), min_size=1, max_size=6))
def test_store_equals_matcher_under_visibility_long(store_adapter: StoreAdapter, defs: Definitions,
                                                    sc: tuple[list[dict[str, Any]], Access], pq: Any, oq: Any) -> None:
    run_property(store_adapter, defs, sc[0], sc[1], pq, oq, [])
