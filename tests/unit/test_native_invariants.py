"""The hand-written core invariants (validation/native_invariants.py) give FHIRPath's answers.

Oracles: the FHIRPath engine's two back-ends (the compiled one, which answered these constraints
before, and the full evaluator). On every site of the example corpora and on 4,000 generated Bundles
(and their References) drawn from the values that decide these rules (each Bundle type, entries
with and without request/response/search/resource, fullUrls repeated across versions or with
``/_history/``, ``_name`` companions, values of the wrong JSON type), a native answer is the engine's.
Where the native function declines (``Unsupported``) the engine decides, as the checker does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath.compiled import Unsupported, compile_fast
from fhir_exchange.validation import Validator
from fhir_exchange.validation.invariants import CORRECTIONS
from fhir_exchange.validation.native_invariants import NATIVE_INVARIANTS, NativeInvariant
from fhir_exchange.validation.shapes import COMPLEX
from tests.unit.test_fhirpath_differential import core_invariants, corpus, invariant_sites

Site = tuple[Any, str, dict[str, Any], dict[str, Any]]  # node, type path, %resource, %rootResource


def _env(node: Any, resource: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    return {"resource": [resource], "rootResource": [root], "context": [node]}


def _compare(expression: str, sites: list[Site]) -> tuple[int, int, list[str]]:
    """(answered natively, declined, mismatches) of one native rule over ``sites``."""
    native = NATIVE_INVARIANTS[expression]
    fast = compile_fast(expression)
    full = fhirpath.compile(expression)
    answered = declined = 0
    mismatches: list[str] = []
    for node, type_path, resource, root in sites:
        try:
            answer = native.answer([node], _env(node, resource, root))  # the function alone
        except Unsupported:
            declined += 1
            continue
        answered += 1
        ours = [] if answer is None else [answer]
        env = _env(node, resource, root)
        if native([node], env) != ours or native.truth([node], env) != answer:
            mismatches.append(f"{native.key}: the NativeInvariant does not give its answer on {node!r:.200}")
        if native.holds_at_once(node) and answer is not True:
            mismatches.append(f"{native.key}: holds at once but answers {answer!r} on {node!r:.200}")
        try:
            compiled = fast([node], _env(node, resource, root))
        except Unsupported:
            compiled = None
        if compiled is not None and compiled != ours:
            mismatches.append(f"{native.key}: native {ours} compiled {compiled} on {node!r:.300}")
        try:
            theirs = full.evaluate(resource, node, root_resource=root, context_path=type_path)
        except Exception:  # the full evaluator refuses: the compiled answer stands
            continue
        if theirs != ours:
            mismatches.append(f"{native.key}: native {ours} full {theirs} on {node!r:.300}")
    return answered, declined, mismatches


def test_every_native_rule_is_the_core_definition() -> None:
    # Keyed by the exact text of the R4 definitions (ref-1 also as corrected): each is a core invariant.
    raw = {e for es in core_invariants().values() for e in es}
    expressions = raw | {CORRECTIONS.get(e, e) for e in raw}
    assert set(NATIVE_INVARIANTS) <= expressions, set(NATIVE_INVARIANTS) - expressions
    assert {n.key for n in NATIVE_INVARIANTS.values()} == {
        "bdl-1", "bdl-2", "bdl-3", "bdl-4", "bdl-5", "bdl-7", "bdl-8", "bdl-9", "bdl-10", "bdl-11", "bdl-12", "ref-1"}
    assert all(isinstance(n, NativeInvariant) for n in NATIVE_INVARIANTS.values())


def test_native_rules_agree_with_the_engine_on_the_corpora() -> None:
    sites = invariant_sites()
    by_native: dict[str, list[Site]] = {}
    for expression, found in sites.items():
        expression = CORRECTIONS.get(expression, expression)
        if expression in NATIVE_INVARIANTS:
            by_native.setdefault(expression, []).extend(found)
    assert {NATIVE_INVARIANTS[e].key for e in by_native} == {n.key for n in NATIVE_INVARIANTS.values()}  # all met
    total_answered = total = 0
    for expression, found in by_native.items():
        answered, declined, mismatches = _compare(expression, found)
        assert not mismatches, mismatches[:5]
        total_answered += answered
        total += answered + declined
    # Well-formed resources are answered natively (the point of the module), not handed back.
    assert total > 300 and total_answered >= 0.95 * total, (total_answered, total)


URLS = ["urn:uuid:1", "urn:uuid:2", "http://a/fhir/Patient/1", "http://a/fhir/Patient/1/_history/2",
        "http://a/fhir/Composition/c"]


def _maybe(rng: random.Random, p: float = 0.5) -> bool:
    return rng.random() < p


def _resource(rng: random.Random) -> Any:
    kind = rng.choice(["Patient", "Composition", "MessageHeader", "Bundle", "list", "no-type"])
    if kind == "list":
        return [{"resourceType": "Patient"}]
    res: dict[str, Any] = {} if kind == "no-type" else {"resourceType": kind, "id": rng.choice(["1", "c", "m"])}
    if _maybe(rng):
        res["meta"] = rng.choice([{"versionId": "1"}, {"versionId": "2"}, {}, {"_versionId": {"extension": []}},
                                  {"versionId": 3}, "meta"])
    if kind == "Patient" and _maybe(rng, 0.3):
        res["contained"] = [{"resourceType": "Practitioner", "id": "p1"}]
    return res


def _entry(rng: random.Random) -> Any:
    if _maybe(rng, 0.03):
        return rng.choice(["entry", 7, None])
    e: dict[str, Any] = {}
    if _maybe(rng, 0.7):
        e["fullUrl"] = rng.choice(URLS)
    if _maybe(rng, 0.05):
        e["_fullUrl"] = {"extension": [{"url": "http://x", "valueString": "y"}]}
    if _maybe(rng, 0.05):
        e["fullUrl"] = 5
    for name, value in (("resource", None), ("request", {"method": "POST", "url": "Patient"}),
                        ("response", {"status": "201"}), ("search", {"mode": "match"})):
        if _maybe(rng, 0.6 if name == "resource" else 0.3):
            e[name] = _resource(rng) if value is None else value
        elif _maybe(rng, 0.04):
            e[name] = rng.choice([None, [], [value or {}]])
    return e


def _bundle(rng: random.Random) -> dict[str, Any]:
    b: dict[str, Any] = {"resourceType": "Bundle"}
    t = rng.choice(["document", "message", "transaction", "transaction-response", "batch", "batch-response",
                    "history", "searchset", "collection", None, 3, "companion"])
    if t == "companion":
        b["_type"] = {"extension": []}
    elif t is not None:
        b["type"] = t
    if _maybe(rng, 0.3):
        b["total"] = rng.choice([3, None, [], "3"])
    if _maybe(rng, 0.05):
        b["_total"] = {"extension": []}
    if _maybe(rng, 0.4):
        b["identifier"] = rng.choice([{}, {"system": "urn:x"}, {"value": "1"}, {"system": "urn:x", "value": "1"},
                                      {"_system": {"extension": []}, "value": "1"}, [{"system": "s", "value": "v"}]])
    if _maybe(rng, 0.5):
        b["timestamp"] = rng.choice(["2024-01-01T00:00:00Z", None, 5])
    if _maybe(rng, 0.05):
        b["_timestamp"] = {"extension": []}
    if _maybe(rng, 0.9):
        b["entry"] = [_entry(rng) for _ in range(rng.randint(0, 4))]
    elif _maybe(rng, 0.5):
        b["entry"] = rng.choice([{}, "entry", []])
    return b


def _reference_sites(rng: random.Random) -> list[Site]:
    container: dict[str, Any] = {"resourceType": "Patient", "id": "x"}
    if _maybe(rng, 0.7):
        container["contained"] = rng.choice([
            [{"resourceType": "Practitioner", "id": "a"}, {"resourceType": "Organization", "id": "b"}],
            [{"resourceType": "Practitioner"}], [{"resourceType": "Practitioner", "_id": {"extension": []}}],
            [{"resourceType": "Practitioner", "id": 4}], {"resourceType": "Practitioner", "id": "a"}, []])
    ref: dict[str, Any] = {}
    value = rng.choice(["#a", "#b", "#c", "#", "Patient/1", "http://a/Patient/1", "", "#a/x", None, 5, "absent"])
    if value != "absent":
        ref["reference"] = value
    if _maybe(rng, 0.05):
        ref["_reference"] = {"extension": []}
    if _maybe(rng, 0.2):
        ref["display"] = "d"
    sites: list[Site] = [(ref, "Reference", container, container)]
    contained = container.get("contained")
    if isinstance(contained, list) and contained and isinstance(contained[0], dict):
        sites.append((ref, "Reference", contained[0], container))  # a reference inside a contained resource
    return sites


def test_native_rules_agree_with_the_engine_on_generated_bundles() -> None:
    rng = random.Random(15)
    by_key: dict[str, list[str]] = {}
    for e, n in NATIVE_INVARIANTS.items():
        by_key.setdefault(n.key, []).append(e)  # ref-1: its R4 text and the corrected one
    sites: dict[str, list[Site]] = {e: [] for e in NATIVE_INVARIANTS}

    def add(key: str, site: Site) -> None:
        for e in by_key[key]:
            sites[e].append(site)
    for _ in range(4000):
        b = _bundle(rng)
        for key in ("bdl-1", "bdl-2", "bdl-3", "bdl-4", "bdl-7", "bdl-9", "bdl-10", "bdl-11", "bdl-12"):
            add(key, (b, "Bundle", b, b))
        entries = b.get("entry")
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict):
                add("bdl-5", (e, "Bundle.entry", b, b))
                add("bdl-8", (e, "Bundle.entry", b, b))
        for site in _reference_sites(rng):
            add("ref-1", site)
    for expression, found in sites.items():
        answered, declined, mismatches = _compare(expression, found)
        assert not mismatches, mismatches[:5]
        # The generator makes odd values often; well over half the sites are still answered natively.
        assert answered >= len(found) // 2, (NATIVE_INVARIANTS[expression].key, answered, declined)


def test_natives_sit_only_where_the_validator_evaluates_them() -> None:
    # The walk collects no site for a native invariant; Validator._native_invariants evaluates them on
    # every Reference, every resource and the resources' direct children. A native rule anywhere else
    # (a backbone deeper down, another datatype) would go unchecked: none is.
    v = Validator(Definitions.load())
    shapes = v.shapes
    reference = shapes.type_shape("Reference")
    assert reference is not None and [c.key for c, _ in reference.native] == ["ref-1"]
    placed: set[str] = set()
    for rt in sorted(v.definitions.resource_types()):
        root = shapes.resource_shape(rt)
        if root is None:
            continue
        placed |= {c.key for c, _ in root.native}
        direct = {id(child) for _, _, child in shapes.native_children(root)}
        placed |= {c.key for _, _, child in shapes.native_children(root) for c, _ in child.native}
        seen: set[int] = set()
        todo = [(root, 0)]
        while todo:
            shape, depth = todo.pop()
            if id(shape) in seen:
                continue
            seen.add(id(shape))
            if shape.native and shape is not root and shape is not reference:
                assert depth == 1 and id(shape) in direct, (rt, shape.name)
            for p in shape.props.values():
                if p.kind == COMPLEX:
                    todo.append((shapes.resolve(p), depth + 1))
    assert placed == {"bdl-1", "bdl-2", "bdl-3", "bdl-4", "bdl-5", "bdl-7", "bdl-8", "bdl-9", "bdl-10", "bdl-11",
                      "bdl-12"}


CASES: list[dict[str, Any]] = [
    {"resourceType": "Bundle", "type": "document", "entry": [{"fullUrl": "urn:uuid:1", "resource": {
        "resourceType": "Patient", "id": "1", "contained": [{"resourceType": "Practitioner", "id": "p"}],
        "generalPractitioner": [{"reference": "#p"}, {"reference": "#nope"}, {"reference": "#"}],
        "managingOrganization": {"reference": "#x", "_reference": {"extension": [
            {"url": "http://example.org/e", "valueString": "v"}]}}}},
        {"fullUrl": "urn:uuid:1/_history/2", "request": {"method": "POST", "url": "Patient"}},
        {}, {"search": {"mode": "match"}}, "x"], "total": 3},
    {"resourceType": "Bundle", "type": "message", "timestamp": "2024-01-01T00:00:00Z", "entry": [
        {"fullUrl": "http://a/fhir/Patient/1", "resource": {"resourceType": "Patient", "id": "1", "meta": {
            "versionId": "1"}}},
        {"fullUrl": "http://a/fhir/Patient/1", "resource": {"resourceType": "Patient", "id": "1", "meta": {
            "versionId": "1"}}, "response": {"status": "200"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "#gone"}, "extension": [
                              {"url": "http://example.org/r", "valueReference": {"reference": "#also-gone"}}]}}]}}]},
    {"resourceType": "Bundle", "type": 7, "_type": {"extension": []}, "entry": {"fullUrl": "x"}},
    {"resourceType": "Bundle", "type": "batch", "entry": []},
    # '#' alone: the container, from a contained resource only (the corrected ref-1), here in both places.
    {"resourceType": "Patient", "id": "c", "managingOrganization": {"reference": "#"},
     "contained": [{"resourceType": "Organization", "id": "o", "partOf": {"reference": "#"}},
                   {"resourceType": "Organization", "id": "o2", "partOf": {"reference": "#o"}},
                   {"resourceType": "Organization", "id": "o3", "partOf": {"reference": "#none"}}],
     "generalPractitioner": [{"reference": "#o"}, {"reference": "#o2"}]},
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"search": {"mode": "match"}, "resource": {
        "resourceType": "Patient", "id": "2"}, "fullUrl": "http://a/Patient/2"}], "total": 1},
]


@pytest.fixture
def without_natives() -> Iterator[dict[str, NativeInvariant]]:
    """No native rule while the test runs (validators built then evaluate them all by FHIRPath); the
    rules themselves are given to the test."""
    saved = dict(NATIVE_INVARIANTS)
    NATIVE_INVARIANTS.clear()
    try:
        yield saved
    finally:
        NATIVE_INVARIANTS.update(saved)


def _issues(v: Validator, resources: list[Any]) -> list[list[tuple[str, str, str | None, tuple[str, ...]]]]:
    return [[(i.severity, i.diagnostics, i.message_id, i.expression) for i in v.validate(r)] for r in resources]


def test_the_validator_reports_what_the_fhirpath_sites_reported(
        without_natives: dict[str, NativeInvariant]) -> None:
    # Oracle: the same validator built without native rules, where every one of these invariants is a
    # FHIRPath site of the walk. Every issue, its message and path, is the same, on the corpora and on
    # Bundles that break each rule (references into contained resources, in extensions and in a Bundle
    # inside a Bundle; entries that are empty or not objects; wrong JSON types).
    resources = [*corpus(), *CASES]
    fhirpath_sites = _issues(Validator(Definitions.load()), resources)
    NATIVE_INVARIANTS.update(without_natives)
    native = _issues(Validator(Definitions.load()), resources)
    assert native == fhirpath_sites
    broken = {d.split(":")[1].strip() for issues in native for _, d, m, _ in issues if m == "sd-invariant"}
    assert {"ref-1", "bdl-1", "bdl-2", "bdl-3", "bdl-4", "bdl-5", "bdl-7", "bdl-8", "bdl-9", "bdl-11"} <= broken
