"""Validation speed: our Validator against fhir.resources R4B ``model_validate`` on the same resources.

https://hl7.org/fhir/R4/validation.html — the figure of merit is resources validated per second.
Run: ``.venv/bin/python bench/bench_validation.py [--seconds 2] [--generated 400] [--rounds 5] [--profiles-only]``

Sets:
- ``examples``: every JSON resource in tests/data (FHIRPath inputs, validator cases); the core
  package tgz carries no examples.
- ``generated``: resources of common clinical types generated from the compiled core shapes with random
  values, so that no string value repeats (our per-element caches of clean values cannot help); coded
  elements with a required or extensible binding get codes from the ValueSet when it can be expanded
  locally, and every resource has a narrative, as real resources do.
- ``bundle``: the generated resources as entries of collection Bundles of 50.
- ``consult IG``: the valid examples of the consult implementation guide (examples/valid, examples/bundles),
  each validated against core plus the consult and KR Core profiles of its ``meta.profile``.
- one row per profile (issue 15): ``consult Task`` (the five Task examples), ``consult ServiceRequest``,
  ``consult Consent``, ``message Bundle`` (the five consult message Bundles, each entry against its own
  profile too) and ``KR Core Patient`` (a Patient with the KR Core identifiers, telecom slices and a road
  name address): core + that profile, with its invariants, against fhir.resources on the same resources.
The ratio is ours/theirs in resources per CPU-second, measured in the same process after a warm-up
pass, in alternating rounds (best round of each side), so that other load on the machine does not
decide it. Two figures for ours: the full validator (structure, bindings, references, invariants
by FHIRPath...) and the structural part alone (``invariants=False``), which is the work pydantic does.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402

from fhir_exchange import native  # noqa: E402
from fhir_exchange.definitions import Definitions  # noqa: E402
from fhir_exchange.validation import Validator  # noqa: E402
from fhir_exchange.validation.shapes import PRIM, RESOURCE, Prop, Shape  # noqa: E402

SUITES = ROOT / "tests" / "data"  # fhirpath-r4/ and validator-r4/ (tests/data/README.md)
KR_CORE = ROOT / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"
TYPES = ["Patient", "Observation", "Organization", "Practitioner", "Encounter", "Condition", "ServiceRequest",
         "Task", "Communication", "Consent", "DiagnosticReport", "Endpoint", "Location", "DocumentReference"]


def consult_examples() -> tuple[Definitions, list[dict[str, Any]]]:
    """The consult IG's valid examples, with definitions holding its profiles and KR Core."""
    folder = Path(tempfile.mkdtemp(prefix="bench-ig-")) / "profiles"
    # A copy: the package loader writes an index into the folder it loads.
    shutil.copytree(ROOT / "profiles", folder, ignore=shutil.ignore_patterns("fsh", ".*"))
    defs = Definitions.load([folder, KR_CORE])
    out = []
    for sub in ("valid", "bundles"):
        for f in sorted((ROOT / "examples" / sub).glob("*.json")):
            res = json.loads(f.read_bytes())
            if isinstance(res, dict) and res.get("meta", {}).get("profile"):
                out.append(res)
    return defs, out


KR_PATIENT = "http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-patient"
ROAD = "http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-roadNameAddress"


def kr_core_patient() -> dict[str, Any]:
    """A KR Core Patient as a hospital would send it: identifiers, name, the Phone and E-mail telecom
    slices, a road name address (the KR Core extension) and a contact."""
    address = {"extension": [{"url": ROAD, "extension": [
        {"url": "district", "valueString": "서울특별시 종로구"}, {"url": "roadName", "valueString": "대학로"},
        {"url": "detailedAddress", "valueString": "101"}]}],
        "text": "서울특별시 종로구 대학로 101", "postalCode": "03080", "country": "KR"}
    return {
        "resourceType": "Patient", "id": "kr-pat", "meta": {"profile": [KR_PATIENT]},
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">김민수</div>'},
        "identifier": [{"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                             "code": "MR"}]},
                        "system": "http://hospital-a.example.kr/mrn", "value": "A-000123"}],
        "active": True,
        "name": [{"use": "official", "text": "김민수", "family": "김", "given": ["민수"]}],
        "telecom": [{"system": "phone", "value": "010-1234-5678", "use": "mobile"},
                    {"system": "email", "value": "minsu@example.kr"}],
        "gender": "male", "birthDate": "1948-03-02", "address": [address],
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                                   "code": "N"}]}],
                     "name": {"text": "김영희"}, "telecom": [{"system": "phone", "value": "010-9876-5432"}]}],
    }


def profile_sets(items: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The per-profile rows: the consult examples of each profile, and the KR Core Patient."""
    def of(name: str) -> list[dict[str, Any]]:
        return [r for r in items if any(str(u).endswith("/" + name) for u in r["meta"]["profile"])]
    messages = [r for r in items if r["resourceType"] == "Bundle" and r.get("type") == "message"]
    return [("consult Task", of("consult-task")), ("consult ServiceRequest", of("consult-service-request")),
            ("consult Consent", of("consult-consent")), ("message Bundle", messages),
            ("KR Core Patient", [kr_core_patient()])]


def example_resources(validator: Validator) -> list[dict[str, Any]]:
    out = []
    for f in sorted(SUITES.glob("**/*.json")):
        if f.name == "manifest.json":
            continue
        try:
            res = json.loads(f.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        rt = res.get("resourceType") if isinstance(res, dict) else None
        if rt and validator.definitions.is_resource_type(rt):
            try:
                get_fhir_model_class(rt)
            except Exception:  # R4-only types without an R4B model
                continue
            out.append(res)
    return out


class Generator:
    """Random resources from the compiled core shapes; every string value is fresh."""

    def __init__(self, validator: Validator, seed: int) -> None:
        self.v = validator
        self.rng = random.Random(seed)
        self.counter = 0

    def word(self) -> str:
        self.counter += 1
        return "".join(self.rng.choices(string.ascii_letters, k=5)) + str(self.counter)

    def codes(self, p: Prop) -> list[tuple[str, str]]:
        b = p.binding
        if b is None or not b.value_set:
            return []
        exp = self.v.terminology.expand(b.value_set)
        if exp is None or exp.open_systems or exp.all_open:
            return []
        return sorted((s, c) for s, cs in exp.codes.items() for c in cs)

    def primitive(self, code: str, p: Prop) -> Any:
        if codes := self.codes(p):
            return self.rng.choice(codes)[1]
        r = self.rng
        y, m, d = r.randint(1900, 2099), r.randint(1, 12), r.randint(1, 28)
        return {
            "boolean": lambda: r.random() < 0.5,
            "integer": lambda: r.randint(-1000, 100000),
            "unsignedInt": lambda: r.randint(0, 100000),
            "positiveInt": lambda: r.randint(1, 100000),
            "decimal": lambda: round(r.uniform(-100, 100), 3),
            "date": lambda: f"{y:04d}-{m:02d}-{d:02d}",
            "dateTime": lambda: f"{y:04d}-{m:02d}-{d:02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00+09:00",
            "instant": lambda: f"{y:04d}-{m:02d}-{d:02d}T10:20:{r.randint(0, 59):02d}.123Z",
            "time": lambda: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
            "uri": lambda: "http://example.org/" + self.word(),
            "url": lambda: "http://example.org/" + self.word(),
            "canonical": lambda: "http://example.org/fhir/StructureDefinition/" + self.word(),
            "oid": lambda: f"urn:oid:1.2.{r.randint(0, 9999)}",
            "uuid": lambda: "urn:uuid:6e0e5e4c-4b0e-4c7a-9a1d-0f1e2d3c4b5a",
            "base64Binary": lambda: "aGVsbG8gd29ybGQ=",
            "xhtml": lambda: '<div xmlns="http://www.w3.org/1999/xhtml">' + self.word() + "</div>",
        }.get(code, self.word)()

    def fill(self, shape: Shape, depth: int) -> dict[str, Any]:
        groups: dict[int, list[Prop]] = {}
        for p in shape.props.values():
            if p.kind == RESOURCE or p.elem.name in ("extension", "modifierExtension", "contained"):
                continue
            if shape.resource_type and p.elem.name in ("implicitRules", "language"):
                continue
            groups.setdefault(id(p.elem), []).append(p)
        gs = list(groups.values())
        chosen = [g for g in gs if g[0].elem.min > 0]
        optional = [g for g in gs if g[0].elem.min == 0]
        if depth > 0:
            chosen += self.rng.sample(optional, min(len(optional), self.rng.randint(2, 6)))
        if not chosen:
            chosen = [next((g for g in optional if g[0].kind == PRIM), optional[0])]
        out: dict[str, Any] = {}
        for g in chosen:
            p = self.rng.choice(g)
            n = self.rng.randint(1, 2) if p.is_array else 1
            vals = [self.value(p, depth) for _ in range(n)]
            out[p.key] = vals if p.is_array else vals[0]
        return out

    def value(self, p: Prop, depth: int) -> Any:
        if p.kind == PRIM:
            assert p.prim is not None
            return self.primitive(p.prim.code, p)
        codes = self.codes(p)
        if codes and p.type_code == "CodeableConcept":
            s, c = self.rng.choice(codes)
            return {"coding": [{"system": s, "code": c}]}
        if codes and p.type_code in ("Coding", "Quantity"):
            s, c = self.rng.choice(codes)
            return {"system": s, "code": c}
        return self.fill(self.v.shapes.resolve(p), depth - 1)

    def resource(self) -> dict[str, Any]:
        rt = self.rng.choice(TYPES)
        shape = self.v.shapes.resource_shape(rt)
        assert shape is not None
        text = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{self.word()}</div>'}
        return {"resourceType": rt, "id": self.word(), "text": text, **self.fill(shape, 3)}


def rates(fns: list[Callable[[dict[str, Any]], Any]], items: list[dict[str, Any]], seconds: float,
          rounds: int) -> list[float]:
    """Resources per CPU-second of each function: rounds alternate between the functions, and the
    best round counts, so load from other processes on the machine does not decide the ratio."""
    for fn in fns:
        for r in items:
            fn(r)
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            n = 0
            start = time.process_time()
            while True:
                for r in items:
                    fn(r)
                n += len(items)
                elapsed = time.process_time() - start
                if elapsed >= seconds / rounds:
                    break
            best[k] = max(best[k], n / elapsed)
    return best


def theirs(res: dict[str, Any]) -> None:
    # try/except, not contextlib.suppress: the context manager would add its own cost to their side.
    try:  # noqa: SIM105
        get_fhir_model_class(res["resourceType"]).model_validate(res)
    except Exception:  # an invalid resource is a verdict, not a failure of the bench
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--generated", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profiles-only", action="store_true", help="only the consult IG and per-profile rows")
    args = ap.parse_args()

    v = Validator(Definitions.load())
    examples = example_resources(v)
    gen = Generator(v, args.seed)
    generated = [gen.resource() for _ in range(args.generated)]
    bundles = [{"resourceType": "Bundle", "type": "collection",
                "entry": [{"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i * 50 + j:012d}", "resource": r}
                          for j, r in enumerate(generated[i * 50:(i + 1) * 50])]}
               for i in range(max(1, len(generated) // 50))]

    def ours(res: dict[str, Any]) -> None:
        v.validate(res)

    structural = Validator(Definitions.load(), invariants=False)

    def ours_structural(res: dict[str, Any]) -> None:
        structural.validate(res)

    rows = []
    core_sets = (("examples", examples, 1), ("generated", generated, 1), ("bundle of 50", bundles, 50))
    for name, items, per in () if args.profiles_only else core_sets:
        full, struct, other = rates([ours, ours_structural, theirs], items, args.seconds, args.rounds)
        rows.append((name, len(items), full * per, struct * per, other * per))
    if (ROOT / "profiles").exists() and KR_CORE.exists():
        # Core plus the consult profiles each example declares in meta.profile (the 'consult IG' row).
        ig_defs, ig_items = consult_examples()
        ig = Validator(ig_defs)
        ig_structural = Validator(ig_defs, invariants=False)
        full, struct, other = rates([ig.validate, ig_structural.validate, theirs], ig_items, args.seconds,
                                    args.rounds)
        rows.append(("consult IG", len(ig_items), full, struct, other))
        for name, items in profile_sets(ig_items):
            bad = [i for r in items for i in ig.validate(r) if i.severity in ("error", "fatal")]
            assert items and not bad, f"{name}: the resources must be valid: {bad[:3]}"
            full, struct, other = rates([ig.validate, ig_structural.validate, theirs], items, args.seconds,
                                        args.rounds)
            rows.append((name, len(items), full, struct, other))
    print(f"{'set':<24}{'n':>5}{'ours res/s':>12}{'ratio':>7}{'ours, no invariants':>21}{'ratio':>7}"
          f"{'fhir.resources R4B':>20}")
    for name, n, full, struct, other in rows:
        print(f"{name:<24}{n:>5}{full:>12,.0f}{full / other:>6.1f}x{struct:>21,.0f}{struct / other:>6.1f}x"
              f"{other:>20,.0f}")
    print("res/s per CPU-second, best of", args.rounds, "alternating rounds; 'no invariants': "
          "Validator(invariants=False), the work fhir.resources does (structure, no FHIRPath)")
    print("validator modules:", "compiled with mypyc (fhir_exchange/native.py)" if native.active()
          else "pure Python (no current build: scripts/build_native.py, or FHIR_EXCHANGE_NATIVE=0)")


if __name__ == "__main__":
    main()
