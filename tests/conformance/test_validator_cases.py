"""Oracle: HL7 validator test cases (https://hl7.org/fhir/R4/validation.html) through our Validator.

Each case of tests/data/validator-r4/manifest.json names a resource, its supporting
definitions and the number of errors the HL7 Java reference validator reports, for the base check
and optionally for a check against a profile. A check *agrees* when both validators find errors or
both find none. Supporting definitions are registered with ``Definitions.add`` (XML ones converted
first), as a client would PUT them.

Some cases run the reference validator with options (``examples``, ``validateReference``,
``validateContains`` in the upstream validator/manifest.json, which the copy in tests/data leaves
out); ``CASE_OPTIONS`` repeats them and ``policy`` maps each to our ``ValidationPolicy``. Options
that change nothing here are not repeated (``security-checks``: we always report what it adds).

Every check that disagrees is listed, with its reason, in ``validator_cases_known.json``; a check
that agrees must not be listed (so the list cannot rot), and every unlisted check must agree. Kept on
purpose: an unknown non-modifier extension is a warning (extensibility.html: applications should not
reject resources merely because they contain extensions), where the reference validator's default is
an error; and one case upstream runs in R5 mode, which an R4 server cannot agree with.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation import Validator
from fhir_exchange.validation.policy import DEFAULT_POLICY, ValidationPolicy
from fhir_exchange.validation.shapes import ShapeBuilder
from fhir_exchange.validation.xml import parse_xml_resource

SUITE = Path(__file__).resolve().parents[1] / "data" / "validator-r4"
KNOWN_FILE = Path(__file__).with_name("validator_cases_known.json")
MIN_AGREEMENT = 0.97

# The per-case options of FHIR/fhir-test-cases validator/manifest.json, keyed by (name, file).
CASE_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("dr-example-org", "dr-example-org.json"): {"examples": False},
    ("parameters-reference", "parameters-reference.json"): {"validateReference": "CHECK_EXISTS_AND_TYPE"},
    ("parameters-reference-bad", "parameters-reference-bad.json"): {"validateReference": "CHECK_EXISTS_AND_TYPE"},
    ("qr-bad-ref2", "qr-bad-ref2.json"): {"validateReference": "CHECK_EXISTS_AND_TYPE"},
    ("contained-resource-bad-id", "contained-resource.json"): {"validateContains": "CHECK_VALID"},
    ("contained-resource-bad-id-ignore", "contained-resource.json"): {"validateContains": "IGNORE"},
}

pytestmark = pytest.mark.skipif(not SUITE.exists(), reason="validator-r4 suite not present")


@lru_cache(maxsize=1)
def _core() -> Definitions:
    return Definitions.load()


@lru_cache(maxsize=1)
def _xml_shapes() -> ShapeBuilder:
    return ShapeBuilder(_core())


def load(rel: str) -> dict[str, Any]:
    raw = (SUITE / "cases" / rel).read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if rel.endswith(".xml"):
        return parse_xml_resource(raw, _xml_shapes())
    return orjson.loads(raw)


def checks() -> list[tuple[str, dict[str, Any], str]]:
    if not SUITE.exists():
        return []  # collected at import time: the module's skipif then skips every test
    manifest = json.loads((SUITE / "manifest.json").read_text())
    out = []
    for case in manifest["cases"]:
        label = f"{case['name']} [{case['file']}]"
        if case.get("expected_errors") is not None:
            out.append((f"{label} base", case, "base"))
        prof = case.get("profile")
        if prof and prof.get("expected_errors") is not None:
            out.append((f"{label} profile", case, "profile"))
    return out


def policy(case: dict[str, Any], store: dict[str, dict[str, Any]]) -> ValidationPolicy:
    """The case's options as our policy; the reference validator's fetcher is the stand-in store."""
    options = CASE_OPTIONS.get((case["name"], case["file"]))
    if not options:
        return DEFAULT_POLICY
    return ValidationPolicy(
        example_urls=options.get("examples", True),
        reference_targets="exist" if options.get("validateReference") == "CHECK_EXISTS_AND_TYPE" else "type",
        resolve_reference=lambda rt, rid: f"{rt}/{rid}" in store,
        validate_contained=options.get("validateContains") != "IGNORE",
    )


def run(case: dict[str, Any], kind: str) -> tuple[list[Issue], int]:
    defs = Definitions(_core().packages)
    # Questionnaires are not conformance resources for Definitions; the server finds them in its
    # store, which this stand-in plays.
    store: dict[str, dict[str, Any]] = {}
    for rel in case.get("supporting", []):
        res = load(rel)
        defs.add(res)
        if isinstance(res.get("url"), str):
            store[res["url"]] = res
            store[f"{res['url']}|{res.get('version')}"] = res
    profiles: list[str] = []
    expected = case["expected_errors"]
    if kind == "profile":
        prof = case["profile"]
        for rel in prof.get("supporting", []):
            defs.add(load(rel))
        sd = load(prof["source"])
        defs.add(sd)
        profiles.append(sd["url"])
        expected = prof["expected_errors"]
    try:
        resource = load(case["file"])
    except orjson.JSONDecodeError as e:
        # The server answers unparseable JSON with 400 and an OperationOutcome: one error.
        return [Issue("error", "structure", f"Invalid JSON: {e}")], expected
    validator = Validator(defs, fetch_canonical=store.get, policy=policy(case, store))
    issues = validator.validate(resource, profiles=profiles)
    return [i for i in issues if i.severity in ("error", "fatal")], expected


CHECKS = checks()
KNOWN: dict[str, str] = json.loads(KNOWN_FILE.read_text()) if KNOWN_FILE.exists() else {}


@pytest.mark.parametrize(("label", "case", "kind"), CHECKS, ids=[c[0] for c in CHECKS])
def test_case_agrees_or_is_listed(label: str, case: dict[str, Any], kind: str) -> None:
    errors, expected = run(case, kind)
    agrees = bool(errors) == (expected > 0)
    if label in KNOWN:
        assert not agrees, f"{label} now agrees: remove it from {KNOWN_FILE.name}"
    else:
        assert agrees, (f"{label}: reference validator {expected} errors, ours {len(errors)}: "
                        + "; ".join(f"{e.expression} {e.diagnostics}" for e in errors[:5]))


def test_known_list_names_real_checks() -> None:
    labels = {c[0] for c in CHECKS}
    assert not set(KNOWN) - labels, set(KNOWN) - labels


def test_agreement_rate() -> None:
    total = len(CHECKS)
    rate = (total - len(KNOWN)) / total
    print(f"\nvalidator-r4: {total - len(KNOWN)}/{total} checks agree ({rate:.1%})")
    assert rate >= MIN_AGREEMENT
