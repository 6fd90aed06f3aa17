"""Which route SQLite takes for sorted pages and chains (issue 19), and that it answers the same as the
slower routes: the sorted index walk with criteria (its arguments were once bound out of order, so it
never found a row and every such search silently took the match-set route), and a chain driving an
index-only query from the reference index."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhir_exchange.search.extract import make_indexer
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.port import NEW
from fhir_exchange.store.sqlite import SqliteStore
from tests.store.contract import _definitions, make_version, query, ts

N_OBS = 300


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Path]:
    store = SqliteStore(tmp_path / "fhir.db", indexer=make_indexer(_definitions()))  # the real extraction
    await store.open()
    try:
        async with store.transaction() as uow:
            for p in range(10):
                v, doc = make_version("Patient", f"p{p}", 1, ts(1), gender="male" if p % 3 else "female",
                                      identifier=[{"system": "urn:mrn", "value": f"m{p}"}])
                await uow.put(v, doc, expected_version=NEW)
            for i in range(N_OBS):
                v, doc = make_version(
                    "Observation", f"o{i}", 1, ts(1), status="final",
                    code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    subject={"reference": f"Patient/p{i % 10}"},
                    effectiveDateTime=f"2023-{1 + i % 12:02d}-{1 + (i * 7) % 28:02d}T{i % 24:02d}:00:00Z")
                await uow.put(v, doc, expected_version=NEW)
    finally:
        await store.close()
    yield tmp_path / "fhir.db"


def test_the_sorted_walk_with_criteria_fills_the_page_and_agrees_with_the_match_set(db: Path) -> None:
    conn = sqlite3.connect(db)
    for params in ([("date", "ge2023-06-01")], [("date", "ge2023-03-01"), ("date", "lt2023-12-01")],
                   [("date", "ge2023-03-01"), ("subject", "Patient/p3")]):
        for sort in ("-date", "date"):
            q = query("Observation", *params, ("_sort", sort), ("_count", "7"))
            walked = search_sql._walk_sorted(conn, q)
            assert walked is not None and len(walked) == 7, (params, sort)
            saved, search_sql.STREAM_THRESHOLD = search_sql.STREAM_THRESHOLD, 10**9  # per-row sort values
            try:
                rids, _total = search_sql.execute(conn, q)
            finally:
                search_sql.STREAM_THRESHOLD = saved
            assert walked == rids, (params, sort)
    conn.close()


def test_a_chain_drives_from_the_reference_index_and_counts_the_same(db: Path) -> None:
    conn = sqlite3.connect(db)
    for value, expected in (("urn:mrn|m4", N_OBS // 10), ("urn:mrn|nobody", 0)):
        q = query("Observation", ("subject:Patient.identifier", value), ("_count", "5"))
        source = search_sql.index_source(q, conn)
        assert source is not None and "search_reference" in source[0].partition(") r WHERE ")[0], source
        rids, total = search_sql.execute(conn, q)
        assert total == expected and len(rids) == min(5, expected)
        where, args = search_sql.where_clause(q)  # the resource-row route
        assert conn.execute(f"SELECT count(*) FROM resource r WHERE {where}", args).fetchone()[0] == expected
    conn.close()


def test_deceased_is_indexed_by_the_compiled_back_end_as_the_full_evaluator_does() -> None:
    """Patient.deceased's expression (``X.exists() and X != false``, once 40% of a Patient's
    extraction through the full evaluator, issue 19) compiles; it indexes what the full evaluator does."""
    from fhir_exchange.fhir import fhirpath
    from fhir_exchange.fhir.fhirpath.compiled_typed import compile_typed, search_environment

    expression = "Patient.deceased.exists() and Patient.deceased != false"
    fast = compile_typed(expression, "Patient")
    assert fast is not None
    for extra in ({}, {"deceasedBoolean": False}, {"deceasedBoolean": True}, {"deceasedDateTime": "2020-01-01"}):
        patient = {"resourceType": "Patient", **extra}
        ours = [v for v, _ in fast([patient], search_environment(patient))]
        assert ours == fhirpath.evaluate(patient, expression), extra
        assert ours == [bool(extra) and extra.get("deceasedBoolean") is not False]
