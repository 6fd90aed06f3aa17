"""Profile walks skipped when known to report nothing: https://hl7.org/fhir/R4/profiling.html and https://hl7.org/fhir/R4/references.html.

``ProfileValidator.shortcuts`` (on by default) skips a walk of a resource against a profile it was
walked against already without a single issue (a Bundle entry checked for its ``meta.profile`` and
again for another entry's ``targetProfile``), and a single reference whose only check is
``targetProfile`` when it resolves to nothing. The verdicts must be those of walking everything:
compared here on the consult IG's examples, valid and invalid, and on seeded mutants of them.
The resolver's lookups and ``reference_type`` without the regex are compared with the regex on edge cases.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation import Validator
from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.profile import ProfileContext
from fhir_exchange.validation.references import LITERAL_REFERENCE, Resolver, reference_type
from fhir_exchange.validation.structure import WalkContext
from tests.json_objects import json_objects

ROOT = Path(__file__).resolve().parents[2]
KRCORE_TGZ = ROOT / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"
CONSULT = "http://fhir-exchange.org/fhir/StructureDefinition/"
REQUEST = ROOT / "examples" / "bundles" / "Bundle-message-consult-request.json"

pytestmark = pytest.mark.skipif(not KRCORE_TGZ.exists(), reason="KR Core package not available")


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    folder = tmp_path_factory.mktemp("ig") / "profiles"
    # A copy: the package loader writes an index into the folder it loads.
    shutil.copytree(ROOT / "profiles", folder, ignore=shutil.ignore_patterns("fsh", ".*"))
    return Validator(Definitions.load([folder, KRCORE_TGZ]))


def both_ways(v: Validator, res: dict[str, Any], profiles: list[str] | None = None) -> tuple[list[Issue], list[Issue]]:
    v.profiles.shortcuts = True
    try:
        fast = v.validate(res, profiles=profiles or [])
        v.profiles.shortcuts = False
        full = v.validate(res, profiles=profiles or [])
    finally:
        v.profiles.shortcuts = True
    return fast, full


def examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for sub in ("valid", "bundles", "invalid"):
        for f in sorted((ROOT / "examples" / sub).glob("*.json")):
            out.append((f"{sub}/{f.name}", json.loads(f.read_bytes())))
    return out


def mutants(res: dict[str, Any], rng: random.Random, n: int) -> Iterator[dict[str, Any]]:
    """Copies with one to three edits: a key dropped, a string changed, a reference redirected, a value
    wrapped in a list or an item repeated: errors inside entries that other entries' targets meet."""
    for _ in range(n):
        m = copy.deepcopy(res)
        nodes = json_objects(m)
        for _ in range(rng.randint(1, 3)):
            node = rng.choice(nodes)
            keys = [k for k in node if k != "resourceType"]
            if not keys:
                continue
            key = rng.choice(keys)
            val = node[key]
            op = rng.random()
            if op < 0.4:
                del node[key]
            elif op < 0.6 and isinstance(val, str):
                node[key] = val + "x"
            elif op < 0.7 and key == "reference":
                node[key] = rng.choice(["ServiceRequest/nope", "#c1", "urn:uuid:00000000-0000-4000-8000-000000000001"])
            elif op < 0.85:
                node[key] = val if isinstance(val, list) else [val]
            elif isinstance(val, list) and val:
                node[key] = [*val, copy.deepcopy(val[0])]
        yield m


def test_shortcuts_agree_on_consult_examples(validator: Validator) -> None:
    checked = 0
    for name, res in examples():
        fast, full = both_ways(validator, res)
        assert fast == full, name
        declared = [p for p in res.get("meta", {}).get("profile", []) if isinstance(p, str)]
        if declared:
            fast, full = both_ways(validator, res, declared)
            assert fast == full, f"{name} (profiles named)"
        checked += 1
    assert checked > 90


def test_shortcuts_agree_on_mutants(validator: Validator) -> None:
    rng = random.Random(15)
    with_errors = 0
    for name, res in examples():
        if res.get("resourceType") != "Bundle":
            continue
        for i, m in enumerate(mutants(res, rng, 6)):
            fast, full = both_ways(validator, m)
            assert fast == full, f"{name} mutant {i}"
            with_errors += any(x.severity == "error" for x in fast)
    assert with_errors > 50  # the mutants do break things


def test_invalid_target_still_reported(validator: Validator) -> None:
    """The ServiceRequest entry misses authoredOn (min 1 in its profile): its own walk reports that,
    and the Task's basedOn and focus, whose targetProfile it is, still do not conform."""
    bundle = json.loads(REQUEST.read_bytes())
    del bundle["entry"][3]["resource"]["authoredOn"]
    fast, full = both_ways(validator, bundle)
    assert fast == full
    errors = {(i.message_id, i.expression) for i in fast if i.severity == "error"}
    assert ("sd-cardinality-min", ("Bundle.entry[3].resource.authoredOn",)) in errors
    assert ("ref-target-type", ("Bundle.entry[4].resource.basedOn[0]",)) in errors
    assert ("ref-target-type", ("Bundle.entry[4].resource.focus",)) in errors


def _profile_pass(v: Validator, res: dict[str, Any]) -> tuple[ProfileContext, list[Any]]:
    sink = IssueSink()
    wctx = WalkContext(sink, collect_invariants=False)
    assert v.structure.validate_resource(res, "", wctx) is not None
    resolver = Resolver(res, wctx.resources)
    return ProfileContext(IssueSink(), res, resolver.resolve, resolver.container_of), wctx.resources


def test_clean_walk_is_remembered_and_answers_conforms(validator: Validator) -> None:
    bundle = json.loads(REQUEST.read_bytes())
    ctx, _ = _profile_pass(validator, bundle)
    sr = bundle["entry"][3]["resource"]
    url = CONSULT + "consult-service-request"
    validator.profiles.validate_resource(sr, url, "Bundle.entry[3].resource", ctx)
    assert (id(sr), url) in ctx.clean and ctx.sink.attempts == 0
    walked = ctx.sink.attempts
    assert validator.profiles.conforms(sr, url, "ServiceRequest", "Bundle.entry[4].resource.focus", ctx)
    assert ctx.sink.attempts == walked and ctx.sink.result() == []


def test_walk_with_issues_is_not_remembered(validator: Validator) -> None:
    bundle = json.loads(REQUEST.read_bytes())
    sr = bundle["entry"][3]["resource"]
    del sr["authoredOn"]
    ctx, _ = _profile_pass(validator, bundle)
    url = CONSULT + "consult-service-request"
    validator.profiles.validate_resource(sr, url, "Bundle.entry[3].resource", ctx)
    assert (id(sr), url) not in ctx.clean
    assert [i.message_id for i in ctx.sink.result()] == ["sd-cardinality-min"]
    # Its verdict is known from that walk: conforms() answers without walking it again.
    assert ctx.verdicts[(id(sr), url)] is False
    attempts = ctx.sink.attempts
    assert not validator.profiles.conforms(sr, url, "ServiceRequest", "Bundle.entry[4].resource.focus", ctx)
    assert ctx.sink.attempts == attempts
    # Walked again at its own path (e.g. a second profile pass): the same issue, once.
    validator.profiles.validate_resource(sr, url, "Bundle.entry[3].resource", ctx)
    assert [i.message_id for i in ctx.sink.result()] == ["sd-cardinality-min"]


def test_contained_target_is_still_held_to_its_profile(validator: Validator) -> None:
    """A standalone Task: ``ServiceRequest/sr`` resolves to nothing (nothing to check), but a ``#sr``
    contained ServiceRequest that misses what its profile requires does not conform."""
    task = next(r for name, r in examples() if name.startswith("valid/") and r.get("resourceType") == "Task")
    assert task["focus"] == {"reference": "ServiceRequest/sr"}
    fast, full = both_ways(validator, task)
    assert fast == full and not [i for i in fast if i.severity == "error"]
    sr = copy.deepcopy(json.loads(REQUEST.read_bytes())["entry"][3]["resource"])
    sr.pop("meta")
    sr["id"] = "sr"
    sr["subject"] = task["for"]
    del sr["authoredOn"]
    local = {**copy.deepcopy(task), "contained": [sr], "focus": {"reference": "#sr"}}
    fast, full = both_ways(validator, local)
    assert fast == full
    assert ("ref-target-type", ("Task.focus",)) in {(i.message_id, i.expression) for i in fast}


def _by_regex(index: dict[str, dict[str, Any]], ref: str) -> dict[str, Any] | None:
    m = LITERAL_REFERENCE.match(ref)
    return index.get(f"{m.group('type')}/{m.group('id')}") if m else None


def test_resolver_lookup_without_regex_agrees() -> None:
    r = Resolver({"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Patient", "id": "1"}},
        {"resource": {"resourceType": "Patient", "id": "_history"}},
        {"resource": {"resourceType": "Observation", "id": "a.b-1"}},
        {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Task", "id": "t"}}]}, [])
    assert not r.local_only
    refs = ["Patient/1", "Patient/1/_history/2", "http://x.org/fhir/Patient/1", "https://x/_history/Patient/1",
            "ftp://x/Patient/1", "urn:oid:1.2/Patient/1", "patient/1", "Patient/_history", "Patient/_history/1",
            "Patient/1/_history/", "Patient/1/_history/2/3", "/Patient/1", "Observation/a.b-1", "Task/t",
            "urn:uuid:x", "http://x/Patient/1/_history/v/_history/2", "Patient//1", "Patient/1/"]
    rng = random.Random(3)
    parts = ["Patient", "1", "_history", "2", "http:", "", "x.org", "urn:oid:1", "ftp:", "Observation", "a.b-1"]
    refs += ["/".join(rng.choice(parts) for _ in range(rng.randint(1, 7))) for _ in range(3000)]
    for ref in refs:
        expected = r.by_full_url.get(ref) or _by_regex(r.by_type_id, ref)
        assert r.resolve(ref, {}) is expected, ref
        assert r.resolve(ref, {}) is expected, ref  # remembered


def test_resolver_outside_a_bundle_resolves_contained_only(validator: Validator) -> None:
    inner = {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p"}}
    task = {"resourceType": "Task", "id": "t", "contained": [inner], "status": "requested", "intent": "order",
            "focus": {"reference": "#sr"}}
    ctx, _ = _profile_pass(validator, task)
    assert ctx.resolve("#sr", task) is inner
    assert ctx.resolve("ServiceRequest/sr", task) is None and ctx.resolve("Task/t", task) is None


def test_binding_verdict_does_not_depend_on_what_was_validated_before(validator: Validator) -> None:
    """The consult note's contentType (text/plain) cannot be verified: the structural pass and the
    profile report the same information issue, the sink keeps one. That must not make the profile's
    binding cache take the code as good: in a note whose attachment is (wrongly) an array the
    structural pass does not reach it, and the profile alone reports it, as on a fresh validator."""
    note = json.loads((ROOT / "examples" / "valid" / "DocumentReference-consult-note.json").read_bytes())
    wrong = copy.deepcopy(note)
    wrong["content"][0]["attachment"] = [wrong["content"][0]["attachment"]]
    fresh = Validator(validator.definitions).validate(wrong)
    assert "tx-code-unverified" in {i.message_id for i in fresh}
    validator.validate(note)
    assert validator.validate(wrong) == fresh


def test_reference_type_without_regex_agrees() -> None:
    rng = random.Random(5)
    parts = ["Patient", "1", "_history", "P", "pa", "\u00c4", "Patient\n", "1\n", "http:", "", "x.org", "urn:oid:1",
             "a-b.c", "x" * 64, "x" * 65, "Pat ient", "#1", "Zz", "Aa1", "https:", "fhir", "x\ny", "http:x",
             "-", "..", "a-\u00c4", "-" * 64, "a-" * 33, "1_2", "a b-c", "\u00b2-1"]
    refs = ["/".join(rng.choice(parts) for _ in range(rng.randint(1, 7))) for _ in range(40000)]
    for ref in [*refs, "Patient/1", "Patient/1\n", "P/1", "Patient/" + "1" * 65, "http://x.org/Patient/1",
                "https://x.org/fhir/Patient/1", "https:///Patient/1", "https://x/Patient/1", "https://Patient/1",
                "http://x.org/Patient/1/_history/2", "https://x.org/fhir/Patient/1\n", "http:/x/Patient/1"]:
        m = LITERAL_REFERENCE.match(ref)
        assert reference_type(ref) == (m.group("type") if m else None), ref


def test_references_in_a_cycle_agree(validator: Validator) -> None:
    """Two Communications answer each other (inResponseTo, whose targetProfile is their own profile):
    each walk asks for the other's verdict, which asks for the first's again (cut by the recursion
    guard). A walk that was cut is not remembered: the verdicts are those of walking everything,
    valid and with one of the two broken."""
    bundle = json.loads((ROOT / "examples" / "bundles" / "Bundle-message-consult-communication.json").read_bytes())
    first, second = bundle["entry"][1], bundle["entry"][2]
    second["resource"]["inResponseTo"] = [{"reference": first["fullUrl"]}]
    fast, full = both_ways(validator, bundle)
    assert fast == full
    broken = copy.deepcopy(bundle)
    del broken["entry"][2]["resource"]["sent"]
    fast_broken, full_broken = both_ways(validator, broken)
    assert fast_broken == full_broken
    errors = {(i.message_id, i.expression) for i in fast_broken if i.severity == "error"}
    assert ("sd-cardinality-min", ("Bundle.entry[2].resource.sent",)) in errors
    assert ("ref-target-type", ("Bundle.entry[1].resource.inResponseTo[0]",)) in errors
