"""Defects a new user ran into: refused formats must name what was refused (not its characters), the
CapabilityStatement is dated when it was generated, progress output of ``load`` / ``migrate`` ends its
line (and ``migrate`` counts versions, not files), and ``validate`` of a folder skips JSON files that are
not FHIR resources (a manifest) instead of counting them as invalid."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import fhir_exchange.store.migrate as migrate_module
from fhir_exchange.cli import main
from fhir_exchange.clock import Clock
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError, invalid
from fhir_exchange.settings import Settings
from fhir_exchange.store.migrate import MigrationReport
from tests.api.conftest import oo

ROOT = Path(__file__).resolve().parents[2]
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Kim"}]}


# -- content negotiation: the OperationOutcome names _format, Accept or Content-Type ----------------------

@pytest.mark.parametrize(("params", "headers", "status", "expression"), [
    ({"_format": "ttl"}, {}, 406, ["_format"]),
    ({"_format": "text/turtle"}, {}, 406, ["_format"]),
    ({"_format": "html"}, {"Accept": "application/fhir+json"}, 406, ["_format"]),
    ({}, {"Accept": "text/html"}, 406, ["Accept"]),
])
async def test_refused_format_names_the_parameter_not_its_characters(
        raw_client: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str], status: int,
        expression: list[str]) -> None:
    resp = await raw_client.get("/Patient", params=params, headers=headers)
    assert resp.status_code == status
    [issue] = oo(resp)["issue"]
    assert issue["code"] == "not-supported"
    assert issue["expression"] == expression


@pytest.mark.parametrize("content_type", ["application/pdf", "text/plain"])
async def test_refused_content_type_names_the_header(raw_client: httpx.AsyncClient, content_type: str) -> None:
    resp = await raw_client.post("/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'/>",
                                 headers={"Content-Type": content_type})
    assert resp.status_code == 415
    [issue] = oo(resp)["issue"]
    assert issue["expression"] == ["Content-Type"]


def test_a_single_string_expression_is_wrapped_not_iterated() -> None:
    assert FhirError(Category.INVALID, "bad", "_count").issues[0].to_json()["expression"] == ["_count"]
    assert FhirError(Category.INVALID, "bad", "_count").expression == ("_count",)
    assert FhirError(Category.INVALID, "bad", ["a", "b"]).issues[0].expression == ("a", "b")
    assert "expression" not in FhirError(Category.INVALID, "bad").issues[0].to_json()
    assert invalid("bad", "_sort").issues[0].expression == ("_sort",)


# -- CapabilityStatement.date comes from the injected clock ---------------------------------------------

NOW = datetime(2031, 4, 5, 6, 7, 8, 9000, tzinfo=UTC)


@pytest.fixture
async def dated_client(settings: Settings, definitions: Definitions
                       ) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with a fixed clock (and the session's Definitions, as tests/api/conftest.py does)."""
    from fhir_exchange.api.app import create_app

    app = create_app(settings, definitions=definitions, clock=Clock(now=lambda: NOW))
    await app.state.services.store.open()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir") as c:
            yield c
    finally:
        await app.state.services.store.close()


async def test_capability_statement_is_dated_by_the_clock(dated_client: httpx.AsyncClient) -> None:
    resp = await dated_client.get("/metadata")
    assert resp.status_code == 200
    assert resp.json()["date"] == "2031-04-05T06:07:08.009Z"  # a FHIR dateTime, from the injected clock


# -- command line: load / migrate progress, validate of a folder --------------------------------------------

def _tty(monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)


@pytest.mark.parametrize("tty", [True, False])
def test_load_progress_ends_with_a_newline(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(PATIENT))
    (folder / "b.json").write_text("{broken")
    _tty(monkeypatch, tty)
    assert main(["load", "--data-dir", str(tmp_path / "data"), str(folder)]) == 1
    captured = capsys.readouterr()
    assert captured.err.endswith("\n") and "2/2 files" in captured.err
    # a failure is on a line of its own (the bar's line is cleared with a carriage return first)
    assert f"\n{folder / 'b.json'}: " in "\n" + captured.err.replace("\r", "\n")
    assert "\n\n" not in captured.err
    assert captured.out.startswith("Loaded 1 of 2 files")  # no blank line first
    assert captured.out.endswith(" (1 failed)\n")


@pytest.mark.parametrize("tty", [True, False])
def test_migrate_progress_counts_versions_and_ends_with_a_newline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    async def fake_migrate(source: Any, target: Any, *, progress: Any = None) -> MigrationReport:
        for n in (500, 1000, 1200):
            progress(n, 1200)
        return MigrationReport(versions=1200, copied=1200, resources=700)

    monkeypatch.setattr(migrate_module, "migrate", fake_migrate)
    monkeypatch.setenv("FHIR_EXCHANGE_CACHE_DIR", str(tmp_path / "cache"))
    _tty(monkeypatch, tty)
    assert main(["migrate", "--from", f"sqlite:///{tmp_path / 'a.db'}", "--to", f"sqlite:///{tmp_path / 'b.db'}"]) == 0
    captured = capsys.readouterr()
    assert "1200/1200 versions" in captured.err and "files" not in captured.err
    assert captured.err.endswith("\n")
    assert captured.out.startswith("Migrated 700 resources, 1200 versions (1200 new)")
    assert captured.out.endswith("every version identical\n")


def test_validate_skips_a_json_file_that_is_not_a_resource_in_a_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Patient-ok.json").write_text(json.dumps(PATIENT))
    (tmp_path / "manifest.json").write_text(json.dumps({"Patient-ok.json": {"rule": "none"}}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "numeric-type.json").write_text('{"resourceType": 7}')
    assert main(["validate", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "1 files: 1 valid, 0 with errors" in captured.out and "3 skipped" in captured.out
    assert "manifest.json" not in captured.out
    for name in ("manifest.json", "list.json", "numeric-type.json"):
        assert f"{tmp_path / name}: skipped: not a FHIR resource" in captured.err


def test_validate_a_non_resource_named_explicitly_is_still_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"Patient-ok.json": {"rule": "none"}}))
    assert main(["validate", str(manifest)]) == 1
    assert "1 files: 0 valid, 1 with errors" in capsys.readouterr().out
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    assert main(["validate", str(listing)]) == 1
    assert "fatal: not a FHIR resource" in capsys.readouterr().out


def test_validate_the_invalid_examples_does_not_count_their_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    folder = ROOT / "examples/invalid"
    resources = len([f for f in folder.glob("*.json") if f.name != "manifest.json"])
    assert main(["validate", str(folder), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert f"{resources} files: 0 valid, {resources} with errors" in captured.out
    assert "manifest.json" not in captured.out and "manifest.json: skipped" in captured.err
