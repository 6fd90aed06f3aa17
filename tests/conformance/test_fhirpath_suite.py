"""The official FHIRPath test suite (R4 copy) against ``fhir_exchange.fhir.fhirpath``.

Source: tests-fhir-r4.xml from https://github.com/FHIR/fhir-test-cases (r4/fhirpath), with its
JSON inputs, in ``tests/data/fhirpath-r4`` (or ``$FHIRPATH_SUITE_DIR``).

Every ``<test>`` runs: the expression is compiled and evaluated on its input file; an
``invalid`` test passes when compiling or evaluating raises ``FhirPathError``; otherwise the
result must equal the ``<output>`` list (in order unless ``ordered="false"``; ``predicate="true"``
turns the result into "exists"). The suite's semantic errors (strict mode) are what
``CompiledPath.check(<type of the input resource>)`` reports; the harness runs that check for
every case that has an input, so a false alarm from it fails a valid case. Outputs compare by
their declared type: numbers by value, dates and times by their text, quantities as
``value 'unit'``; untyped outputs (boundary and precision tests) also compare decimal scale.

Cases we do not pass are listed with a reason in ``fhirpath_known_failures.txt``; every other
case must pass (regression guard), and the overall pass count must stay at or above
``PASS_FLOOR``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.fhir.fhirpath import FhirPathError, TypedValue, compile

SUITE_DIR = Path(
    os.environ.get(
        "FHIRPATH_SUITE_DIR",
        Path(__file__).resolve().parents[1] / "data" / "fhirpath-r4",
    )
)
KNOWN_FAILURES_FILE = Path(__file__).with_name("fhirpath_known_failures.txt")
TOTAL_CASES = 935
# The pass count this implementation reaches; raise it when cases get fixed, never lower it.
PASS_FLOOR = 934


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    expression: str
    invalid: str | None
    outputs: tuple[tuple[str | None, str], ...]
    input_file: str | None
    predicate: bool
    ordered: bool


@dataclass(frozen=True)
class Outcome:
    case: Case
    passed: bool
    detail: str


def load_cases() -> list[Case]:
    root = ET.parse(SUITE_DIR / "tests-fhir-r4.xml").getroot()
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for group in root.iter("group"):
        for test in group.findall("test"):
            expression = test.find("expression")
            assert expression is not None and expression.text is not None
            name = test.get("name") or f"{group.get('name')}-unnamed"
            seen[name] = seen.get(name, 0) + 1
            case_id = name if seen[name] == 1 else f"{name}#{seen[name]}"  # testEquivalent23 twice
            cases.append(
                Case(
                    id=case_id,
                    group=group.get("name") or "",
                    expression=expression.text,
                    invalid=expression.get("invalid"),
                    outputs=tuple((o.get("type"), o.text or "") for o in test.findall("output")),
                    input_file=test.get("inputfile"),
                    predicate=test.get("predicate") == "true",
                    ordered=test.get("ordered") != "false",
                )
            )
    return cases


@cache
def _input(name: str | None) -> Any:
    if name is None:
        return None
    path = SUITE_DIR / "inputs" / (name.rsplit(".", 1)[0] + ".json")
    return json.loads(path.read_text(encoding="utf-8"))


def load_known_failures() -> dict[str, str]:
    known: dict[str, str] = {}
    for line in KNOWN_FAILURES_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        known[name] = reason.strip()
    return known


# -- comparison ---------------------------------------------------------------------------------


def _render_quantity(value: dict[str, Any]) -> str:
    number = format(value["value"], "f") if isinstance(value["value"], Decimal) else str(value["value"])
    if "code" in value:
        return f"{number} '{value['code']}'"
    return f"{number} {value['unit']}"


def _render(item: TypedValue) -> str:
    """The suite's text form of an untyped output."""
    value, kind = item.value, item.type or ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind.endswith(("Date", "DateTime", ".date", ".dateTime", ".instant")):
        return f"@{value}"
    if kind.endswith(("Time", ".time")):
        return f"@T{value}"
    if kind.endswith("Quantity") and isinstance(value, dict):
        return _render_quantity(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _same_decimal(text: str, value: Any) -> bool:
    """Equal value and equal scale (1.50 is not 1.5 for boundaries); -0.0 equals 0.0."""
    try:
        expected = Decimal(text)
    except InvalidOperation:
        return False
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    actual = value if isinstance(value, Decimal) else Decimal(str(value))
    return abs(expected).compare_total(abs(actual)) == 0


def _matches(expected: tuple[str | None, str], item: TypedValue) -> bool:
    kind, text = expected
    value = item.value
    if kind == "boolean":
        return isinstance(value, bool) and ("true" if value else "false") == text
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) and value == int(text)
    if kind == "decimal":
        is_number = not isinstance(value, bool) and isinstance(value, int | float | Decimal)
        return is_number and Decimal(str(value)) == Decimal(text)
    if kind in ("date", "dateTime", "instant"):
        return isinstance(value, str) and value == text.lstrip("@")
    if kind == "time":
        return isinstance(value, str) and value == text.removeprefix("@T")
    if kind == "Quantity":
        return isinstance(value, dict) and _render_quantity(value) == text
    if kind is None:
        if _render(item) == text:
            return True
        return (item.type or "").endswith(("Decimal", "Integer", ".decimal", ".integer")) and _same_decimal(text, value)
    return isinstance(value, str) and value == text  # string, code, id, uri, ...


def run_case(case: Case) -> Outcome:
    resource = _input(case.input_file)
    try:
        path = compile(case.expression)
        if isinstance(resource, dict) and "resourceType" in resource:
            path.check(resource["resourceType"])
        result = path.evaluate_typed(resource)  # now()/today() tests only compare with 1974
    except FhirPathError as exc:
        if case.invalid:
            return Outcome(case, True, f"raised as expected: {exc.message}")
        return Outcome(case, False, f"raised {type(exc).__name__}: {exc.message}")
    except Exception as exc:  # a bug in the engine, not an expected FHIRPath error
        return Outcome(case, False, f"crashed with {type(exc).__name__}: {exc}")
    if case.invalid:
        return Outcome(case, False, f"expected a {case.invalid} error, got {[r.value for r in result]!r}")
    if case.predicate:
        result = [TypedValue(bool(result), "System.Boolean")]
    expected = list(case.outputs)
    ok = len(result) == len(expected)
    if ok and case.ordered:
        ok = all(_matches(e, r) for e, r in zip(expected, result, strict=True))
    elif ok:
        remaining = list(result)
        for e in expected:
            hit = next((r for r in remaining if _matches(e, r)), None)
            if hit is None:
                ok = False
                break
            remaining.remove(hit)
    got = [(r.type, r.value) for r in result]
    return Outcome(case, ok, "" if ok else f"expected {expected!r}, got {got!r}")


@cache
def outcomes() -> tuple[Outcome, ...]:
    return tuple(run_case(case) for case in load_cases())


@pytest.fixture(scope="module")
def results() -> Iterator[tuple[Outcome, ...]]:
    started = time.perf_counter()
    out = outcomes()
    elapsed = time.perf_counter() - started
    passed = sum(o.passed for o in out)
    print(f"\nFHIRPath R4 suite: {passed}/{len(out)} passed in {elapsed:.1f}s")
    yield out


# -- tests --------------------------------------------------------------------------------------


def test_suite_is_complete(results: tuple[Outcome, ...]) -> None:
    assert len(results) == TOTAL_CASES


def test_pass_rate(results: tuple[Outcome, ...], capsys: pytest.CaptureFixture[str], record_property: Any) -> None:
    passed = sum(o.passed for o in results)
    record_property("fhirpath_suite_passed", passed)
    record_property("fhirpath_suite_total", len(results))
    with capsys.disabled():
        print(f"\n[fhirpath] official R4 suite pass rate: {passed}/{len(results)} ({100 * passed / len(results):.1f}%)")
    assert passed >= PASS_FLOOR, f"{passed}/{len(results)} passed, floor is {PASS_FLOOR}"


def test_no_regressions(results: tuple[Outcome, ...]) -> None:
    known = load_known_failures()
    regressions = [o for o in results if not o.passed and o.case.id not in known]
    report = "\n".join(f"{o.case.id}: {o.case.expression.strip()!r}: {o.detail}" for o in regressions)
    assert not regressions, f"{len(regressions)} case(s) fail that are not in {KNOWN_FAILURES_FILE.name}:\n{report}"


def test_known_failures_list_is_current(results: tuple[Outcome, ...], capsys: pytest.CaptureFixture[str]) -> None:
    known = load_known_failures()
    ids = {o.case.id for o in results}
    stale = sorted(set(known) - ids)
    assert not stale, f"{KNOWN_FAILURES_FILE.name} names cases that do not exist: {stale}"
    assert all(known.values()), "every known failure needs a one-line reason"
    now_passing = sorted(o.case.id for o in results if o.passed and o.case.id in known)
    if now_passing:
        message = f"known failures that now pass (remove them from {KNOWN_FAILURES_FILE.name}): {now_passing}"
        with capsys.disabled():
            print(f"\n[fhirpath] {message}")
        warnings.warn(message, stacklevel=1)
