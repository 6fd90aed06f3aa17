"""Local terminology service: https://hl7.org/fhir/R4/valueset.html#expansion and https://hl7.org/fhir/R4/terminology-service.html.

ValueSets are expanded from the CodeSystems loaded in :class:`Definitions` (compose include/exclude
by concept list, by whole system, by ``is-a`` / ``descendent-of`` / ``is-not-a`` / ``generalizes`` /
``in`` / ``not-in`` / ``regex`` / ``=`` / ``exists`` filters on the hierarchy or properties, and by nested
``valueSet`` imports, which intersect). The hierarchy is the concept nesting plus the ``parent``,
``subsumedBy`` and ``child`` properties; :class:`CodeSystemIndex` also answers subsumption and
designations (display languages) for the terminology operations. What cannot be
expanded here — SNOMED CT, LOINC, UCUM, KCD-8, BCP-47, any system whose CodeSystem is absent or has
``content`` not-present/example/fragment — is tracked per system as *open*: a code of an open system
is reported as unverified, never as wrong. An explicit concept list is definitive even for a system
we do not hold, because it enumerates the members.

Expansions are cached per ValueSet canonical and invalidated when ``definitions.generation`` moves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_exchange.definitions import Definitions

# Systems whose codes are grammars or huge external terminologies: never enumerable locally.
GRAMMAR_SYSTEMS = frozenset({
    "http://unitsofmeasure.org",
    "urn:ietf:bcp:47",
    "urn:ietf:bcp:13",
    "urn:iso:std:iso:3166",
    "urn:iso:std:iso:4217",
    "http://snomed.info/sct",
    "http://loinc.org",
})


@dataclass(slots=True)
class Expansion:
    """Membership of a ValueSet as far as it is knowable locally."""

    url: str
    codes: dict[str, dict[str, str | None]] = field(default_factory=dict)  # system -> code -> display
    open_systems: set[str] = field(default_factory=set)  # members of these systems are unknowable
    all_open: bool = False  # some part is unknowable with no system to pin it to
    problems: list[str] = field(default_factory=list)

    def add(self, system: str, code: str, display: str | None = None) -> None:
        self.codes.setdefault(system, {})[code] = display

    def contains(self, system: str | None, code: str) -> bool | None:
        """True/False when decidable, None when the answer needs a terminology we do not hold."""
        if system is None:
            if any(code in codes for codes in self.codes.values()):
                return True
            return None if (self.open_systems or self.all_open) else False
        codes = self.codes.get(system)
        if codes is not None and code in codes:
            return True
        if system in self.open_systems or self.all_open:
            return None
        return False

    def systems(self) -> set[str]:
        return set(self.codes) | self.open_systems


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """Outcome of validating one code against a ValueSet."""

    valid: bool | None  # None: unverifiable locally
    message: str
    display: str | None = None


class Terminology:
    """Expands ValueSets and validates codes using only loaded definitions."""

    def __init__(self, definitions: Definitions) -> None:
        self.defs = definitions
        self._lock = threading.RLock()
        self._generation = -1
        self._expansions: dict[str, Expansion | None] = {}
        self._cs_index: dict[str, CodeSystemIndex | None] = {}
        # (value set, system, code) -> verdict: bindings repeat the same few codes endlessly.
        self._in_progress: set[str] = set()
        self._verdicts: dict[tuple[str, str | None, str], CodeCheck] = {}

    # -- caches ------------------------------------------------------------------------------

    def _check_generation(self) -> None:
        if self._generation != self.defs.generation:
            self._expansions.clear()
            self._cs_index.clear()
            self._verdicts.clear()
            self._generation = self.defs.generation

    def code_system(self, url: str) -> CodeSystemIndex | None:
        with self._lock:
            self._check_generation()
            if url not in self._cs_index:
                cs = self.defs.resolve(url)
                self._cs_index[url] = (
                    CodeSystemIndex(cs) if cs is not None and cs.get("resourceType") == "CodeSystem" else None
                )
            return self._cs_index[url]

    def expand(self, value_set: str) -> Expansion | None:
        """The expansion of a ValueSet canonical, or None when the ValueSet is unknown."""
        if self._generation == self.defs.generation:
            exp: Expansion | Literal[False] | None = self._expansions.get(value_set, False)
            if exp is not False:
                return exp
        with self._lock:
            self._check_generation()
            if value_set in self._expansions:
                return self._expansions[value_set]
            if value_set in self._in_progress:
                return None  # an import cycle: the inner reference contributes nothing
            self._in_progress.add(value_set)
            try:
                vs = self.defs.resolve(value_set)
                exp = None
                if vs is not None and vs.get("resourceType") == "ValueSet":
                    exp = self._expand(vs, value_set)
            finally:
                self._in_progress.discard(value_set)
            self._expansions[value_set] = exp
            return exp

    def expand_resource(self, vs: dict[str, Any]) -> Expansion:
        """Expand a ValueSet given inline (e.g. contained in a Questionnaire); not cached."""
        with self._lock:
            self._check_generation()
            return self._expand(vs, "#" + str(vs.get("id", "")))

    # -- expansion ---------------------------------------------------------------------------

    def _expand(self, vs: dict[str, Any], url: str) -> Expansion:
        exp = Expansion(url)
        compose = vs.get("compose")
        if not compose:
            # A pre-expanded ValueSet (expansion.contains) is all we have; it may be partial.
            expansion = vs.get("expansion") or {}
            for c in _walk_contains(expansion.get("contains", [])):
                if c.get("system") and c.get("code"):
                    exp.add(c["system"], c["code"], c.get("display"))
            total = expansion.get("total")
            if not expansion or (total is not None and total > sum(len(v) for v in exp.codes.values())):
                exp.all_open = True
            return exp
        for inc in compose.get("include", []):
            part = self._include(inc)
            for system, codes in part.codes.items():
                exp.codes.setdefault(system, {}).update(codes)
            exp.open_systems |= part.open_systems
            exp.all_open |= part.all_open
            exp.problems.extend(part.problems)
        for exc in compose.get("exclude", []):
            part = self._include(exc)
            for system, codes in part.codes.items():
                mine = exp.codes.get(system)
                if mine:
                    for code in codes:
                        mine.pop(code, None)
            if part.open_systems or part.all_open:
                # An exclusion we cannot enumerate makes every member of that system uncertain.
                exp.open_systems |= part.open_systems
                if part.all_open:
                    exp.all_open = True
        return exp

    def _include(self, inc: dict[str, Any]) -> Expansion:
        part = Expansion("")
        system = inc.get("system")
        imported = [self.expand(v) for v in inc.get("valueSet", [])]
        if system is None:
            if not imported:
                return part
            if any(i is None for i in imported):
                part.all_open = True
                part.problems.append("an imported ValueSet is unknown")
                return part
            return _intersect([i for i in imported if i is not None])

        concepts = inc.get("concept")
        filters = inc.get("filter")
        cs = None if system in GRAMMAR_SYSTEMS else self.code_system(system)
        if concepts:
            # The list is definitive; displays come from the CodeSystem when we have it.
            for c in concepts:
                code = c.get("code")
                if code:
                    display = c.get("display")
                    if display is None and cs is not None:
                        display = cs.display(code)
                    part.add(system, code, display)
        elif cs is None or not cs.complete:
            part.open_systems.add(system)
        elif filters:
            codes = cs.filtered(filters)
            if codes is None:
                part.open_systems.add(system)
            else:
                for code in cs.all_codes():  # in the CodeSystem's order: expansions are stable pick-lists
                    if code in codes:
                        part.add(system, code, cs.display(code))
        else:
            for code in cs.all_codes():
                part.add(system, code, cs.display(code))
        if imported:
            if any(i is None for i in imported):
                part.all_open = True
                return part
            return _intersect([part, *[i for i in imported if i is not None]])
        return part

    # -- validation --------------------------------------------------------------------------

    def validate_code(self, value_set: str, system: str | None, code: str) -> CodeCheck:
        key = (value_set, system, code)
        verdict = self._verdicts.get(key)
        if verdict is not None and self._generation == self.defs.generation:
            return verdict
        verdict = self._validate_code(value_set, system, code)
        if len(self._verdicts) > 100_000:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def _validate_code(self, value_set: str, system: str | None, code: str) -> CodeCheck:
        exp = self.expand(value_set)
        if exp is None:
            return CodeCheck(None, f"ValueSet {value_set} is not known to this server")
        verdict = exp.contains(system, code)
        label = f"{system}#{code}" if system else code
        if verdict is True:
            disp = exp.codes.get(system, {}).get(code) if system else None
            return CodeCheck(True, "", disp)
        if verdict is None:
            return CodeCheck(None, f"The code {label} could not be verified against {value_set}: "
                                   f"its code system is not available locally")
        if system is not None:
            cs = self.code_system(system)
            if cs is not None and cs.complete and not cs.has(code):
                return CodeCheck(False, f"Unknown code {label}: not in code system {system}")
        return CodeCheck(False, f"The code {label} is not in the value set {value_set}")

    def system_knows(self, system: str, code: str) -> bool | None:
        """Whether a complete CodeSystem defines ``code`` (None when we cannot say)."""
        cs = None if system in GRAMMAR_SYSTEMS else self.code_system(system)
        if cs is None or not cs.complete:
            return None
        return cs.has(code)


def _walk_contains(contains: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for c in contains:
        yield c
        yield from _walk_contains(c.get("contains", []))


def _intersect(parts: list[Expansion]) -> Expansion:
    out = Expansion("")
    first, rest = parts[0], parts[1:]
    systems = first.systems()
    for p in rest:
        systems &= p.systems() if not p.all_open else systems
    for system in systems:
        known: dict[str, str | None] | None = None
        is_open = False
        for p in parts:
            if system in p.open_systems or p.all_open:
                is_open = True
                continue
            codes = p.codes.get(system, {})
            known = dict(codes) if known is None else {c: d for c, d in known.items() if c in codes}
        if known:
            out.codes[system] = known
        if is_open:
            out.open_systems.add(system)
    out.all_open = all(p.all_open for p in parts)
    return out


def _property_text(value: Any) -> str:
    """A property value as filters compare it: ``true`` (JSON booleans), a Coding's code, or the text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return str(value.get("code", ""))
    return str(value)


class CodeSystemIndex:
    """Codes, hierarchy, properties and designations of one CodeSystem, flattened once.

    The hierarchy is the concept nesting plus the ``parent``/``subsumedBy`` and ``child`` properties
    (codesystem.html#hierarchy); subsumption (:meth:`subsumes`) walks it both ways."""

    def __init__(self, cs: dict[str, Any]) -> None:
        self.url: str = cs.get("url", "")
        self.version: str | None = cs.get("version")
        self.name: str = cs.get("title") or cs.get("name") or self.url
        self.language: str | None = cs.get("language")
        self.content: str = cs.get("content", "complete")
        self.complete = self.content == "complete"
        self.case_sensitive = cs.get("caseSensitive", True)
        self.displays: dict[str, str | None] = {}
        self.parents: dict[str, set[str]] = {}
        self.properties: dict[str, dict[str, set[str]]] = {}  # code -> property -> values
        self.raw_properties: dict[str, list[dict[str, Any]]] = {}  # code -> concept.property as written
        self.designations: dict[str, list[dict[str, Any]]] = {}
        self._children: dict[str, set[str]] | None = None
        self._walk(cs.get("concept", []), None)
        for code, props in self.properties.items():
            for child in props.get("child", ()):
                self.parents.setdefault(child, set()).add(code)
        self._lower = None if self.case_sensitive else {c.lower(): c for c in self.displays}

    def _walk(self, concepts: list[dict[str, Any]], parent: str | None) -> None:
        for c in concepts:
            code = c.get("code")
            if not code:
                continue
            self.displays[code] = c.get("display")
            if c.get("designation"):
                self.designations[code] = list(c["designation"])
            parents = self.parents.setdefault(code, set())
            if parent:
                parents.add(parent)
            if c.get("property"):
                self.raw_properties[code] = list(c["property"])
            for p in c.get("property", []):
                value = next((_property_text(v) for k, v in p.items() if k.startswith("value")), None)
                if value is None:
                    continue
                self.properties.setdefault(code, {}).setdefault(p.get("code", ""), set()).add(value)
                if p.get("code") in ("parent", "subsumedBy"):
                    parents.add(value)
            self._walk(c.get("concept", []), code)

    def has(self, code: str) -> bool:
        if code in self.displays:
            return True
        return self._lower is not None and code.lower() in self._lower

    def canonical(self, code: str) -> str | None:
        """The code as the CodeSystem spells it (case-insensitive systems), or None when unknown."""
        if code in self.displays:
            return code
        return self._lower.get(code.lower()) if self._lower is not None else None

    def display(self, code: str) -> str | None:
        return self.displays.get(code)

    def all_codes(self) -> Iterable[str]:
        return self.displays.keys()

    def children(self, code: str) -> set[str]:
        if self._children is None:
            children: dict[str, set[str]] = {}
            for c, ps in self.parents.items():
                for p in ps:
                    children.setdefault(p, set()).add(c)
            self._children = children
        return self._children.get(code, set())

    def ancestors(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = [code]
        while stack:
            for p in self.parents.get(stack.pop(), ()):
                if p not in out:
                    out.add(p)
                    stack.append(p)
        return out

    def subsumes(self, a: str, b: str) -> str:
        """$subsumes outcome of two codes of this system: equivalent | subsumes | subsumed-by | not-subsumed."""
        if a == b:
            return "equivalent"
        if a in self.ancestors(b):
            return "subsumes"
        if b in self.ancestors(a):
            return "subsumed-by"
        return "not-subsumed"

    def designation(self, code: str, language: str) -> str | None:
        """The display of ``code`` in ``language`` (BCP-47; ``ko`` matches ``ko-KR`` and back)."""
        wanted = language.lower()
        if self.language and self.language.lower() == wanted and self.displays.get(code):
            return self.displays[code]
        best: str | None = None
        for d in self.designations.get(code, ()):
            lang = str(d.get("language", "")).lower()
            if lang == wanted:
                return d.get("value")
            if best is None and lang and lang.split("-")[0] == wanted.split("-")[0]:
                best = d.get("value")
        return best

    def descendants(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = [code]
        while stack:
            for ch in self.children(stack.pop()):
                if ch not in out:
                    out.add(ch)
                    stack.append(ch)
        return out

    def filtered(self, filters: list[dict[str, Any]]) -> set[str] | None:
        """Codes matching every filter; None when a filter is beyond this index (or its regex is invalid)."""
        result: set[str] | None = None
        for f in filters:
            prop, op, value = f.get("property"), f.get("op"), str(f.get("value", ""))
            hierarchy = prop in ("concept", "code")
            if hierarchy and op == "is-a":
                codes = ({value} if value in self.displays else set()) | self.descendants(value)
            elif hierarchy and op == "descendent-of":
                codes = self.descendants(value)
            elif hierarchy and op == "is-not-a":
                codes = set(self.displays) - ({value} | self.descendants(value))
            elif hierarchy and op == "generalizes":
                codes = ({value} | self.ancestors(value)) & set(self.displays) if value in self.displays else set()
            elif hierarchy and op in ("in", "not-in"):
                listed = {c for c in value.split(",") if c in self.displays}
                codes = listed if op == "in" else set(self.displays) - listed
            elif op == "regex":
                try:
                    rx = re.compile(value)
                except re.error:
                    return None
                if hierarchy:
                    codes = {c for c in self.displays if rx.fullmatch(c)}
                else:
                    codes = {c for c, props in self.properties.items() if any(rx.fullmatch(v) for v in
                                                                             props.get(prop or "", ()))}
            elif op == "=":
                codes = {c for c, props in self.properties.items() if value in props.get(prop or "", ())}
            elif op in ("in", "not-in"):
                wanted = set(value.split(","))
                codes = {c for c, props in self.properties.items() if wanted & props.get(prop or "", set())}
                if op == "not-in":
                    codes = set(self.displays) - codes
            elif op == "exists":
                want = value == "true"
                codes = {c for c in self.displays if (prop in self.properties.get(c, {})) == want}
            else:
                return None
            result = codes if result is None else result & codes
        return result or set()
