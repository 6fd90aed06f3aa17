"""Snapshot generation from differentials: https://hl7.org/fhir/R4/profiling.html#snapshot.

A constraint StructureDefinition may carry only its differential (KR Core, most validator test
profiles, anything SUSHI builds without the snapshot step). The snapshot is its base's snapshot
(generated first when the base is itself differential-only) with every differential element merged
in, in order:

- an element present in the base is overlaid: scalar properties replace, ``constraint`` and
  ``mapping`` accumulate (as in the HL7 generator), ``type`` narrows;
- an element below a datatype (``Patient.name.family``) makes the generator *expand* its parent:
  the children of the type's definition — or of the type profile, when the parent names one, or of
  the referenced element for a ``contentReference`` — are copied under the parent's id;
- a slice (``sliceName``, id ``Observation.component:systolic``) starts as a copy of the sliced
  element and its children, gets min 0 unless the differential says otherwise, and is placed after
  the sliced element's existing slices; re-slices (``a/b``) nest the same way;
- a type-specific choice name (``Observation.valueQuantity``) constrains ``value[x]`` to that type.

A differential element that matches nothing in the base is dropped and recorded in ``problems``
(the profile is still usable, as with the HL7 generator); cycles through ``baseDefinition`` are
reported, never followed forever.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.schema import element_ids

ACCUMULATE = ("constraint", "mapping", "condition")
NOT_INHERITED_BY_SLICES = ("slicing",)


class SnapshotError(Exception):
    pass


class UnknownBase(SnapshotError):
    """The base definition is not loaded: nothing can be said about the profile yet."""


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


class SnapshotGenerator:
    """Generates (and caches per url|version and definitions generation) snapshots of profiles."""

    def __init__(self, definitions: Definitions) -> None:
        self.defs = definitions
        self._lock = threading.RLock()
        self._generation = -1
        self._cache: dict[str, dict[str, Any]] = {}
        self._building: set[str] = set()
        self.problems: dict[str, list[str]] = {}  # profile url -> what could not be applied
        # profile url -> ids of the elements it (or its bases) changed; None: not known
        self.changed: dict[str, set[str] | None] = {}

    def with_snapshot(self, sd: dict[str, Any]) -> dict[str, Any]:
        """``sd`` itself when it has a snapshot, else a copy with a generated one."""
        if (sd.get("snapshot") or {}).get("element"):
            return sd
        key = f"{sd.get('url')}|{sd.get('version')}|{id(sd)}"
        with self._lock:
            if self._generation != self.defs.generation:
                self._cache.clear()
                self.problems.clear()
                self.changed.clear()
                self._generation = self.defs.generation
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            if key in self._building:
                raise SnapshotError(f"circular baseDefinition chain through {sd.get('url')}")
            self._building.add(key)
            try:
                out = dict(sd)
                out["snapshot"] = {"element": self.generate(sd)}
            finally:
                self._building.discard(key)
            self._cache[key] = out
            return out

    def resolve_sd(self, url: str) -> dict[str, Any] | None:
        sd = self.defs.resolve(url)
        if sd is None or sd.get("resourceType") != "StructureDefinition":
            return None
        return self.with_snapshot(sd)

    # -- generation --------------------------------------------------------------------------

    def generate(self, sd: dict[str, Any]) -> list[dict[str, Any]]:
        base_url = sd.get("baseDefinition")
        if not base_url:
            raise SnapshotError(f"{sd.get('url')} has neither snapshot nor baseDefinition")
        base = self.resolve_sd(base_url)
        if base is None:
            raise UnknownBase(f"base {base_url} of {sd.get('url')} is not known")
        # Shallow copies: merging replaces values and copies the lists it extends, so the base's
        # (cached, shared) element dicts are never modified; deep copies made this 10x slower.
        snap = [dict(e) for e in base["snapshot"]["element"]]
        base_url = base.get("url", "")
        for e, eid in zip(snap, element_ids(snap), strict=True):
            e["id"] = eid
            # Inherited constraints name their origin, so validators can tell them from the profile's own.
            if "constraint" in e:
                e["constraint"] = [c if "source" in c else {**c, "source": base_url} for c in e["constraint"]]
        diff = (sd.get("differential") or {}).get("element") or []
        base_type = base.get("type")
        work = _Snapshot(snap, self)
        # contentReference expansion copies the base's element, never this profile's constraints or
        # slices of it (Parameters.parameter:a.part must not inherit the parameter slices).
        work.base = [dict(e) for e in snap]
        renames: dict[str, str] = {}
        # What this profile changes, on top of what its base (if itself a profile) changed. A base
        # profile with a published snapshot does not say what it changed: then everything may matter.
        inherited = self.changed.get(base.get("url", ""))
        unknown_base = base.get("derivation") == "constraint" and inherited is None
        changed: set[str] = set(inherited or ())
        for d, did in zip(diff, element_ids(diff), strict=True):
            did = _rebase_id(did, sd.get("type"), base_type)
            for old, new in renames.items():
                if did == old or did.startswith(old + ".") or did.startswith(old + ":"):
                    did = new + did[len(old):]
                    break
            target = work.ensure(did, d)
            if target is None:
                # As the HL7 generator does, the element is dropped and the problem recorded; the rest
                # of the profile still applies (validator case parameters-profiled-resource-multiple).
                self.problems.setdefault(sd.get("url", ""), []).append(
                    f"differential element {did} matches nothing in the base")
                continue
            if target["id"] != did:
                renames[did] = target["id"]
            conflict = _fixed_conflict(target, d)
            if conflict:
                self.problems.setdefault(sd.get("url", ""), []).append(f"{did}: {conflict}")
            _merge(target, d)
            changed.add(target["id"])
        self.changed[sd.get("url", "")] = None if unknown_base else changed
        return work.elements


def _rebase_id(eid: str, own_type: str | None, base_type: str | None) -> str:
    # Differentials always name the type at the root, but logical-model bases may differ; keep ids aligned.
    if own_type and base_type and own_type != base_type and eid.split(".", 1)[0] == own_type:
        return base_type + eid[len(own_type):]
    return eid


def _fixed_conflict(base: dict[str, Any], d: dict[str, Any]) -> str | None:
    """A profile may narrow its base, never contradict it: a fixed value cannot be changed."""
    for k, v in base.items():
        if k.startswith("fixed") and k in d and d[k] != v:
            return f"{k} {d[k]!r} contradicts the base's fixed value {v!r}"
    return None


def _merge(target: dict[str, Any], d: dict[str, Any]) -> None:
    for k, v in d.items():
        if k in ("id", "path"):
            continue
        if k in ACCUMULATE:
            existing = target[k] = list(target.get(k, ()))
            keys = {c.get("key") for c in existing if isinstance(c, dict)} if k == "constraint" else set()
            for item in v:
                if k == "constraint" and item.get("key") in keys:
                    existing[:] = [c for c in existing if c.get("key") != item.get("key")]
                existing.append(copy.deepcopy(item))
            continue
        if k.startswith(("fixed", "pattern")):
            for old in [x for x in target if x.startswith(("fixed", "pattern"))]:
                del target[old]
        target[k] = copy.deepcopy(v)


class _Snapshot:
    """The snapshot under construction, addressed by element id."""

    def __init__(self, elements: list[dict[str, Any]], gen: SnapshotGenerator) -> None:
        self.elements = elements
        self.gen = gen
        self.base: list[dict[str, Any]] = []

    def index(self, eid: str) -> int | None:
        for i, e in enumerate(self.elements):
            if e["id"] == eid:
                return i
        return None

    def subtree_end(self, i: int) -> int:
        """Index after the last descendant (children and slices) of element ``i``."""
        eid = self.elements[i]["id"]
        j = i + 1
        while j < len(self.elements):
            other = self.elements[j]["id"]
            if other.startswith(eid + ".") or other.startswith(eid + ":") or other.startswith(eid + "/"):
                j += 1
            else:
                break
        return j

    def ensure(self, eid: str, d: dict[str, Any]) -> dict[str, Any] | None:
        i = self.index(eid)
        if i is not None:
            return self.elements[i]
        parent_id, _, seg = eid.rpartition(".")
        name, _, slice_name = seg.partition(":")
        if not parent_id:
            return None
        if slice_name:
            return self._make_slice(parent_id, name, slice_name, d)
        parent_i = self.index(parent_id)
        if parent_i is None:
            parent = self.ensure(parent_id, {})
            if parent is None:
                return None
            parent_i = self.index(parent["id"])
            assert parent_i is not None
            parent_id = parent["id"]
            i = self.index(f"{parent_id}.{name}")
            if i is not None:
                return self.elements[i]
        if not self._has_children(parent_i):
            self._expand(parent_i, d)
            i = self.index(f"{parent_id}.{name}")
            if i is not None:
                return self.elements[i]
        return self._choice_rename(parent_id, name)

    def _has_children(self, i: int) -> bool:
        eid = self.elements[i]["id"]
        return i + 1 < len(self.elements) and self.elements[i + 1]["id"].startswith(eid + ".")

    def _choice_rename(self, parent_id: str, name: str) -> dict[str, Any] | None:
        """``valueQuantity`` → ``value[x]`` narrowed to Quantity (profiling.html#choice)."""
        prefix = parent_id + "."
        for e in self.elements:
            eid = e["id"]
            if not (eid.startswith(prefix) and eid.endswith("[x]") and "." not in eid[len(prefix):]):
                continue
            stem = eid[len(prefix):-3]
            if not name.startswith(stem):
                continue
            suffix = name[len(stem):]
            for t in e.get("type", []):
                if _upper_first(t.get("code", "")) == suffix:
                    e["type"] = [t]
                    return e
        return None

    def _make_slice(self, parent_id: str, name: str, slice_name: str, d: dict[str, Any]) -> dict[str, Any] | None:
        base_slice, _, _ = slice_name.rpartition("/")
        sliced_id = f"{parent_id}.{name}" + (f":{base_slice}" if base_slice else "")
        si = self.index(sliced_id)
        if si is None:
            sliced = self.ensure(sliced_id, {})
            if sliced is None:
                return None
            si = self.index(sliced["id"])
            assert si is not None
            sliced_id = sliced["id"]
        sliced = self.elements[si]
        end = self.subtree_end(si)
        new_id = f"{parent_id}.{name}:{slice_name}"
        head = dict(sliced)
        for k in NOT_INHERITED_BY_SLICES:
            head.pop(k, None)
        head["id"] = new_id
        head["sliceName"] = slice_name
        if "min" not in d:
            head["min"] = 0
        out = [head]
        # Children of the unsliced element come along; other slices of it do not.
        for e in self.elements[si + 1:end]:
            if e["id"].startswith(sliced_id + "."):
                c = dict(e)
                c["id"] = new_id + e["id"][len(sliced_id):]
                out.append(c)
        self.elements[end:end] = out
        return head

    def _expand(self, i: int, d: dict[str, Any]) -> None:
        """Copy the children of element ``i``'s type (or type profile, or content reference) under it."""
        e = self.elements[i]
        source: list[dict[str, Any]] | None = None
        root_id = ""
        cref = e.get("contentReference")
        if cref:
            ref_id = cref[cref.index("#") + 1:]
            base = _Snapshot(self.base, self.gen) if self.base else self
            ri = base.index(ref_id)
            if ri is None:
                base, ri = self, self.index(ref_id)
            if ri is not None:
                source = [x for x in base.elements[ri:base.subtree_end(ri)]
                          if ":" not in x["id"][len(ref_id):]]
                root_id = ref_id
        else:
            types = e.get("type") or []
            if len(types) != 1:
                types = [t for t in types if t.get("code", "")[:1].isupper()][:1]
            if types:
                t = types[0]
                sd = None
                for prof in t.get("profile", []):
                    sd = self.gen.resolve_sd(prof)
                    if sd is not None:
                        break
                if sd is None:
                    sd = self.gen.defs.structure_definition(t.get("code", ""))
                    if sd is not None and not (sd.get("snapshot") or {}).get("element"):
                        sd = self.gen.with_snapshot(sd)
                if sd is not None:
                    source = sd["snapshot"]["element"]
                    ids = element_ids(source)
                    source = [dict(x, id=xid) for x, xid in zip(source, ids, strict=True)]
                    root_id = source[0]["id"]
        if not source:
            return
        eid, epath = e["id"], e["path"]
        out = []
        for x in source[1:]:
            xid = x["id"]
            if not xid.startswith(root_id + ".") and not xid.startswith(root_id + ":"):
                continue
            c = dict(x)
            c["id"] = eid + xid[len(root_id):]
            xpath = x.get("path", "")
            root_path = source[0].get("path", root_id)
            c["path"] = epath + xpath[len(root_path):] if xpath.startswith(root_path) else xpath
            out.append(c)
        self.elements[i + 1:i + 1] = out
