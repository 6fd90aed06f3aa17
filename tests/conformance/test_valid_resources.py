"""No false errors: resources known to be valid validate without an error-level issue.

https://hl7.org/fhir/R4/validation.html — a validator that refuses valid data is worse than one that
misses an error. The corpus:

- every conformance resource of the R4 core package (``hl7.fhir.r4.core-4.0.1.tgz``: ~4,500
  StructureDefinitions, ValueSets, CodeSystems, SearchParameters, OperationDefinitions,
  CapabilityStatements...) against the core definitions;
- the consult implementation guide: its conformance resources (``profiles/*.json``) and its valid
  examples (``examples/valid``, ``examples/bundles``) against the guide's definitions;
- the reference suite's valid cases are checked by ``test_validator_cases.py`` (every check agrees
  or is listed with its reason).

The core package itself breaks a few rules of its own definitions; those defects are listed in
``CORE_DEFECTS`` with the rule they break, and the list must stay exact (a listed defect that no
longer reports is a failure), so it cannot hide a new false error.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.definitions.package import Package
from fhir_exchange.validation import Validator

ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = ROOT / "profiles"
EXAMPLES = ROOT / "examples"
KRCORE_TGZ = ROOT / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"
CACHE_DIR = ROOT / ".pytest_cache" / "fhir-packages"

# Defects of the published R4 core package, each an error the HL7 reference validator reports too:
# file name -> the message ids of its errors.
CORE_DEFECTS: dict[str, set[str]] = {
    # Logical models declared neither abstract nor derived (sdf-4: a baseDefinition is required).
    "StructureDefinition-Definition.json": {"sd-invariant"},
    "StructureDefinition-Event.json": {"sd-invariant"},
    "StructureDefinition-FiveWs.json": {"sd-invariant"},
    "StructureDefinition-Request.json": {"sd-invariant"},
    # An id of 67 characters (datatypes.html#id: at most 64).
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json":
        {"resource-id-format"},
}
# SearchParameters of extensions published without SearchParameter.base (1..1).
CORE_DEFECTS_NO_BASE = "sd-cardinality-min"


@cache
def _core() -> Definitions:
    return Definitions.load()


@cache
def _core_validator() -> Validator:
    return Validator(_core())


def _core_package() -> Package:
    return next(p for p in _core().packages if p.name == "hl7.fhir.r4.core")


def _errors(validator: Validator, resource: dict[str, Any]) -> list[str]:
    return [f"{i.message_id} {i.expression} {i.diagnostics}" for i in validator.validate(resource)
            if i.severity in ("error", "fatal")]


def _core_files() -> Iterator[str]:
    for e in _core_package().entries:
        yield e.filename


def test_core_conformance_resources_validate() -> None:
    validator = _core_validator()
    pkg = _core_package()
    checked = 0
    unexpected: list[str] = []
    seen_defects: dict[str, set[str]] = {}
    for filename in _core_files():
        resource = pkg.load(filename)
        checked += 1
        for issue in validator.validate(resource):
            if issue.severity not in ("error", "fatal"):
                continue
            mid = issue.message_id or ""
            if mid in CORE_DEFECTS.get(filename, ()) or (
                    mid == CORE_DEFECTS_NO_BASE and resource.get("resourceType") == "SearchParameter"
                    and issue.expression == ("SearchParameter.base",)):
                seen_defects.setdefault(filename, set()).add(mid)
                continue
            unexpected.append(f"{filename}: {mid} {issue.expression} {issue.diagnostics[:200]}")
    assert checked > 4000
    assert not unexpected, f"{len(unexpected)} false errors:\n" + "\n".join(unexpected[:40])
    listed = {f: ids for f, ids in seen_defects.items() if f in CORE_DEFECTS}
    assert listed == CORE_DEFECTS, "a listed core defect no longer reports: update CORE_DEFECTS"
    assert sum(1 for ids in seen_defects.values() if CORE_DEFECTS_NO_BASE in ids) == 10


@pytest.fixture(scope="module")
def ig_validator(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    # A copy: the package loader writes its index into a folder it loads.
    profiles = tmp_path_factory.mktemp("ig") / "profiles"
    shutil.copytree(PROFILES_DIR, profiles, ignore=shutil.ignore_patterns("fsh", ".*"))
    return Validator(Definitions.load([profiles, KRCORE_TGZ], cache_dir=CACHE_DIR))


IG_FILES = sorted(PROFILES_DIR.glob("*.json")) + sorted((EXAMPLES / "valid").glob("*.json")) + sorted(
    (EXAMPLES / "bundles").glob("*.json"))


@pytest.mark.parametrize("path", [p for p in IG_FILES if p.name not in ("package.json", "manifest.json")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_consult_ig_resources_validate(ig_validator: Validator, path: Path) -> None:
    resource = orjson.loads(path.read_bytes())
    assert not _errors(ig_validator, resource)


# KR Core's defects against R4 (its publisher ran on later tooling), as (message id, text in the issue):
KRCORE_DEFECTS = (
    # The R4 capabilitystatement-expectation extension on elements outside its declared context
    # (format, rest.resource, supportedProfile...): later versions of the extension widened it.
    ("ext-context", "capabilitystatement-expectation"),
    # ImplementationGuide.definition.parameter.code outside R4's required guide-parameter-code.
    ("tx-code-not-in-valueset", "guide-parameter-code"),
)


def test_krcore_conformance_resources_validate(ig_validator: Validator) -> None:
    pkg = next(p for p in ig_validator.definitions.packages if p.name.startswith("hl7.fhir.kr.core"))
    unexpected, defects = [], set()
    for e in pkg.entries:
        for x in _errors(ig_validator, pkg.load(e.filename)):
            known = [d for d in KRCORE_DEFECTS if x.startswith(d[0]) and d[1] in x]
            if known:
                defects.add(known[0])
            else:
                unexpected.append(f"{e.filename}: {x}")
    assert not unexpected, "\n".join(unexpected[:40])
    assert defects == set(KRCORE_DEFECTS)
