"""``fhir-exchange validate``: the offline validator for testers."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_valid_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "examples/valid"), "--quiet"]) == 0
    assert "0 with errors" in capsys.readouterr().out


def test_invalid_example_fails_with_its_rule(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples/invalid/ServiceRequest-status-on-hold.json"
    assert main(["validate", str(path)]) == 1
    assert "cx-sr-1" in capsys.readouterr().out


def test_profile_option_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sr = tmp_path / "sr.json"
    sr.write_text('{"resourceType": "ServiceRequest", "status": "active", "intent": "order",'
                  ' "subject": {"reference": "Patient/p"}}')
    assert main(["validate", str(sr)]) == 0
    profile = "http://fhir-exchange.org/fhir/StructureDefinition/consult-service-request"
    assert main(["validate", str(sr), "--profile", profile]) == 1
    assert main(["validate", str(sr), "--profile", "http://example.org/unknown"]) == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["validate", str(broken)]) == 1
    assert "fatal" in capsys.readouterr().out


def test_a_search_parameter_the_server_would_refuse_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sp = tmp_path / "sp.json"
    sp.write_text('{"resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/f", "name": "f",'
                  ' "status": "active", "description": "d", "code": "f", "base": ["Patient"], "type": "string",'
                  ' "expression": "Patient.name.famly"}')
    assert main(["validate", str(sp)]) == 1
    out = capsys.readouterr().out
    assert "famly" in out and "@ SearchParameter.expression" in out
    sp.write_text(sp.read_text().replace("famly", "family"))
    assert main(["validate", str(sp), "--quiet"]) == 0
