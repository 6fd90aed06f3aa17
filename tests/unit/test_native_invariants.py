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
from typing import Any

from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath.compiled import Unsupported, compile_fast
from fhir_exchange.validation.invariants import CORRECTIONS
from fhir_exchange.validation.native_invariants import NATIVE_INVARIANTS, NativeInvariant
from tests.unit.test_fhirpath_differential import core_invariants, invariant_sites

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
            ours = native([node], _env(node, resource, root))
        except Unsupported:
            declined += 1
            continue
        answered += 1
        truth = native.truth([node], _env(node, resource, root))
        if ours != ([] if truth is None else [truth]):
            mismatches.append(f"{native.key}: truth {truth!r} but collection {ours!r} on {node!r:.200}")
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
    # Keyed by the exact text of the R4 definitions (ref-1 as corrected): each is a core invariant.
    expressions = {CORRECTIONS.get(e, e) for es in core_invariants().values() for e in es}
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
    assert len(by_native) == len(NATIVE_INVARIANTS)  # every rule meets real sites
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
    by_key = {n.key: e for e, n in NATIVE_INVARIANTS.items()}
    sites: dict[str, list[Site]] = {e: [] for e in NATIVE_INVARIANTS}
    for _ in range(4000):
        b = _bundle(rng)
        for key in ("bdl-1", "bdl-2", "bdl-3", "bdl-4", "bdl-7", "bdl-9", "bdl-10", "bdl-11", "bdl-12"):
            sites[by_key[key]].append((b, "Bundle", b, b))
        entries = b.get("entry")
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict):
                sites[by_key["bdl-5"]].append((e, "Bundle.entry", b, b))
                sites[by_key["bdl-8"]].append((e, "Bundle.entry", b, b))
        sites[by_key["ref-1"]].extend(_reference_sites(rng))
    for expression, found in sites.items():
        answered, declined, mismatches = _compare(expression, found)
        assert not mismatches, mismatches[:5]
        # The generator makes odd values often; well over half the sites are still answered natively.
        assert answered >= len(found) // 2, (NATIVE_INVARIANTS[expression].key, answered, declined)
