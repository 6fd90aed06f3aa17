"""``fhir-exchange load``: resources, transaction and message Bundles, with failures counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_load_the_directory_and_a_consult_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the README loads: the directory of the examples, then a consult request as a transaction and
    as a message (the other example Bundles are later steps of a consult: they need its earlier state)."""
    valid = ROOT / "examples/valid"
    paths = [*(str(p) for p in sorted(valid.glob("Organization-*.json"))),
             *(str(p) for p in sorted(valid.glob("Practitioner*.json"))),
             str(ROOT / "examples/bundles/Bundle-transaction-consult-request.json"),
             str(ROOT / "examples/bundles/Bundle-message-consult-request.json")]
    assert main(["load", "--data-dir", str(tmp_path), *paths]) == 0
    assert "(0 failed)" in capsys.readouterr().out


def test_a_later_step_without_its_consult_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    step = ROOT / "examples/bundles/Bundle-transaction-consult-status-update.json"
    assert main(["load", "--data-dir", str(tmp_path), str(step)]) == 1
    assert "cw-" in capsys.readouterr().err


def test_a_message_answered_fatal_error_counts_as_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = ROOT / "examples/invalid/Bundle-cancel-request-still-active.json"
    assert main(["load", "--data-dir", str(tmp_path), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "(1 failed)" in captured.out and "cx-mcan-1" in captured.err


def test_a_folder_s_json_that_is_not_a_resource_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"files": ["Patient.json"]}')
    (folder / "Patient.json").write_text('{"resourceType": "Patient", "gender": "other"}')
    assert main(["load", "--data-dir", str(tmp_path / "data"), str(folder)]) == 0
    captured = capsys.readouterr()
    assert "Loaded 1 of 2 files" in captured.out and "1 skipped" in captured.out
    assert "manifest.json: skipped" in captured.err
    # Named explicitly, it is an error.
    assert main(["load", "--data-dir", str(tmp_path / "data"), str(folder / "manifest.json")]) == 1
