"""Pick lists: https://hl7.org/fhir/R4/valueset-operation-expand.html (``filter``, ``count``/``offset``,
``displayLanguage``), over the local terminology (:mod:`fhir_exchange.validation.terminology`).

A :class:`PickList` is a ValueSet's expansion as an ordered list of concepts, each with its display in
the asked language (a designation of the ValueSet's compose or of the CodeSystem) and a lower-cased search
key built once: ``filter`` matches word prefixes of the code and of the displays, case-insensitively,
every word of the filter somewhere (``blood pres`` finds "Blood pressure panel"). Korean terms are
compounds written without spaces (신경외과, 정형외과), so a Hangul word is also indexed by each of its
suffixes: ``외과`` finds both. A filter scans only the concepts with a word starting with the first two
letters of its rarest word (buckets built once), each by a substring test in C.

:class:`TerminologyService` holds the :class:`Terminology` and the prepared expansions (key: url,
version, id and stored version of the ValueSet); both are derived from the definitions and dropped
together when they change (a CodeSystem or ValueSet written to the server is used at once).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.terminology import GRAMMAR_SYSTEMS, CodeSystemIndex, Expansion, Terminology

WORD = re.compile(r"\w+")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_CACHE_LIMIT = 512  # prepared ValueSets kept per generation of the definitions
_RECENT_LIMIT = 256  # filter results kept per pick list


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _key(texts: list[str | None]) -> str:
    out: list[str] = []
    for text in texts:
        if not text:
            continue
        for w in words(text):
            out.append(w)
            if _HANGUL.search(w):
                out.extend(w[i:] for i in range(1, len(w) - 1))
    return "\x00" + "\x00".join(out)


@dataclass(frozen=True, slots=True)
class Concept:
    system: str
    code: str
    display: str | None
    version: str | None = None
    designations: tuple[dict[str, Any], ...] = ()


class PickList:
    """The concepts of one expansion in one display language, searchable by word prefixes.

    Type-ahead sends ``d``, ``di``, ``dis``...: the matches of a text are a subset of those of any prefix
    of it (each filter word starts with the shorter one's), so the recent results (an LRU) are kept and a
    longer text scans only the matches of its longest cached prefix."""

    def __init__(self, concepts: list[Concept], keys: list[str]) -> None:
        self.concepts = concepts
        self._keys = keys
        self._recent: OrderedDict[str, list[int]] = OrderedDict()
        # The concepts having a word that starts with these one or two letters: the first keystrokes
        # are a look-up, and no scan covers more than the bucket of its rarest filter word.
        self._buckets: dict[str, list[int]] | None = None

    def _bucket(self, word: str) -> list[int]:
        if self._buckets is None:
            buckets: dict[str, list[int]] = {}
            for i, key in enumerate(self._keys):
                for head in {w[:n] for w in key.split("\x00") if w for n in (1, 2)}:
                    buckets.setdefault(head, []).append(i)
            self._buckets = buckets
        return self._buckets.get(word[:2], [])

    def __len__(self) -> int:
        return len(self.concepts)

    def search(self, text: str | None, *, recent: bool = True) -> list[Concept]:
        """The concepts matching ``text``, in expansion order (``recent=False``: ignore the recent results)."""
        needles = ["\x00" + w for w in words(text)] if text else []
        if not needles:
            return self.concepts
        norm = "\x00".join(needles)
        hit = self._recent.get(norm) if recent else None
        if hit is None:
            base = min((self._bucket(n[1:]) for n in needles), key=len)
            for cached, indices in self._recent.items() if recent else ():
                if norm.startswith(cached) and len(indices) < len(base):
                    base = indices
            keys = self._keys
            if len(needles) == 1:
                n = needles[0]
                hit = [i for i in base if n in keys[i]]
            else:
                hit = [i for i in base if all(n in keys[i] for n in needles)]
            self._recent[norm] = hit
            if len(self._recent) > _RECENT_LIMIT:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(norm)
        concepts = self.concepts
        return [concepts[i] for i in hit]


@dataclass(slots=True)
class Prepared:
    """One ValueSet's expansion and its pick lists, per display language, built when first asked."""

    value_set: dict[str, Any]
    expansion: Expansion
    tx: Terminology
    _lists: dict[str, PickList] = field(default_factory=dict)
    _written: dict[tuple[str, str], list[dict[str, Any]]] | None = None

    @property
    def written_designations(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Designations given in the ValueSet's compose, by (system, code)."""
        if self._written is None:
            self._written = _compose_designations(self.value_set)
        return self._written

    def pick_list(self, language: str | None) -> PickList:
        lang = (language or "").lower()
        hit = self._lists.get(lang)
        if hit is None:
            hit = self._lists[lang] = self._build(lang)
        return hit

    def _build(self, language: str) -> PickList:
        written = self.written_designations
        concepts: list[Concept] = []
        keys: list[str] = []
        for system, codes in self.expansion.codes.items():
            cs = None if system in GRAMMAR_SYSTEMS else self.tx.code_system(system)
            version = cs.version if cs is not None else None
            for code, display in codes.items():
                designations = written.get((system, code)) or (cs.designations.get(code, []) if cs else [])
                shown = display
                if language:
                    shown = _designation(designations, language) or (
                        cs.designation(code, language) if cs is not None else None) or display
                concepts.append(Concept(system, code, shown, version, tuple(designations)))
                keys.append(_key([code, display, shown if shown != display else None]))
        return PickList(concepts, keys)

    def display_of(self, system: str | None, code: str) -> tuple[str | None, set[str]]:
        """(the display, every acceptable display: designations too) of a member."""
        for sys, codes in self.expansion.codes.items():
            if (system is None or sys == system) and code in codes:
                display = codes[code]
                ok = {display} if display else set()
                cs = None if sys in GRAMMAR_SYSTEMS else self.tx.code_system(sys)
                written = self.written_designations.get((sys, code)) or []
                for d in [*written, *(cs.designations.get(code, []) if cs is not None else [])]:
                    if isinstance(d.get("value"), str):
                        ok.add(d["value"])
                if cs is not None and cs.display(code):
                    ok.add(str(cs.display(code)))
                return display, ok
        return None, set()


def _compose_designations(vs: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for inc in (vs.get("compose") or {}).get("include", []):
        for c in inc.get("concept", []) or []:
            if c.get("designation") and inc.get("system") and c.get("code"):
                out[(inc["system"], c["code"])] = list(c["designation"])
    return out


def _designation(designations: list[dict[str, Any]], language: str) -> str | None:
    best: str | None = None
    for d in designations:
        lang = str(d.get("language", "")).lower()
        if lang == language:
            return d.get("value")
        if best is None and lang and lang.split("-")[0] == language.split("-")[0]:
            best = d.get("value")
    return best


class TerminologyService:
    """The terminology of one generation of the definitions, with its prepared expansions."""

    def __init__(self, definitions: Definitions) -> None:
        self.defs = definitions
        self.tx = Terminology(definitions)
        self._prepared: dict[tuple[Any, ...], Prepared] = {}
        self._indexes: dict[tuple[Any, ...], CodeSystemIndex] = {}
        self._maps: list[dict[str, Any]] | None = None

    def prepare(self, vs: dict[str, Any], *, cache: bool = True) -> Prepared:
        """The expansion of a ValueSet resource (loaded, or given inline with ``cache=False``)."""
        meta = vs.get("meta") if isinstance(vs.get("meta"), dict) else {}
        key = (vs.get("url"), vs.get("version"), vs.get("id"), (meta or {}).get("versionId"))
        hit = self._prepared.get(key) if cache else None
        if hit is None:
            hit = Prepared(vs, self.tx.expand_resource(vs), self.tx)
            if cache:
                if len(self._prepared) >= _CACHE_LIMIT:
                    self._prepared.clear()
                self._prepared[key] = hit
        return hit

    def concept_maps(self) -> list[dict[str, Any]]:
        """Every loaded ConceptMap (latest version per URL), read once per generation."""
        if self._maps is None:
            self._maps = list(self.defs.iter("ConceptMap"))
        return self._maps

    def index(self, cs: dict[str, Any], *, cache: bool = True) -> CodeSystemIndex:
        """The index of a CodeSystem resource (loaded, or given inline with ``cache=False``)."""
        meta = cs.get("meta") if isinstance(cs.get("meta"), dict) else {}
        key = ("CodeSystem", cs.get("url"), cs.get("version"), cs.get("id"), (meta or {}).get("versionId"))
        hit = self._indexes.get(key) if cache else None
        if hit is None:
            hit = CodeSystemIndex(cs)
            if cache:
                if len(self._indexes) >= _CACHE_LIMIT:
                    self._indexes.clear()
                self._indexes[key] = hit
        return hit

    def code_system(self, canonical: str) -> CodeSystemIndex | None:
        return None if canonical.partition("|")[0] in GRAMMAR_SYSTEMS else self.tx.code_system(canonical)


def service(definitions: Definitions) -> TerminologyService:
    """The service of the current definitions (rebuilt, caches empty, after any change to them)."""
    return definitions.derived("terminology.service", lambda: TerminologyService(definitions))
