"""References and contained resources: https://hl7.org/fhir/R4/references.html and https://hl7.org/fhir/R4/domainresource.html#invs.

Checked here, from the references the structural walk collected:

- the type a literal reference names (``Patient/1``, an absolute ``.../Patient/1``, a ``#id``
  contained resource, a ``urn:uuid:`` Bundle entry) is one of the element's target types
  (``ElementDefinition.type.targetProfile`` of the core definition);
- ``Reference.type``, when given, agrees with the reference;
- a ``#id`` reference resolves to a contained resource of the same container;
- the contained-resource invariants, natively: dom-2 (no nested contained), dom-3 (every contained
  resource is referenced from the container, directly or through another contained resource, or
  refers to the container), dom-4 (no meta.versionId or meta.lastUpdated), dom-5 (no meta.security),
  and dom-6 (a resource should have a narrative: a warning, as the core definition says).

The resolver also serves the profile walker (``targetProfile``, ``resolve()`` discriminators) and
Bundle checks: within a Bundle, references resolve against entry ``fullUrl``s (bundle.html#references);
within a Parameters, ``Type/id`` references resolve to the resources of its parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.shapes import UNSET as _UNSET
from fhir_exchange.validation.shapes import Prop
from fhir_exchange.validation.structure import Visited

LITERAL_REFERENCE: Final = re.compile(
    r"^(?:(?P<base>https?://.+?|urn:[^/]+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)


# Type names already found to be ``[A-Z][A-Za-z]+``: a few hundred at most in practice (the resource
# types), each asked about by most references; a set lookup instead of two method calls and two
# comparisons (about 700 machine instructions in the compiled build). Bounded: names come from clients.
_TYPE_NAMES: Final[set[str]] = set()


def _type_name(s: str) -> bool:
    """``[A-Z][A-Za-z]+`` without the regex (``frozenset.issuperset(str)`` builds a set per call)."""
    if s in _TYPE_NAMES:
        return True
    ok = len(s) > 1 and "A" <= s[0] <= "Z" and s.isascii() and s.isalpha()
    if ok and len(_TYPE_NAMES) < 1024:
        _TYPE_NAMES.add(s)
    return ok


def _id(s: str) -> bool:
    """``[A-Za-z0-9\\-.]{1,64}`` without the regex: ASCII letters and digits, with '-' and '.' taken out
    (a regex match cost more than the rest of a reference's check; so did ``str.strip(chars)``)."""
    if not 1 <= len(s) <= 64:
        return False
    if s.isalnum():
        return s.isascii()
    rest = s.replace("-", "").replace(".", "")
    return rest == "" or (rest.isalnum() and rest.isascii())


def reference_type(ref: str) -> str | None:
    """The resource type a literal reference names, or None (``#id``, ``urn:uuid:``, not a literal)."""
    rt, sep, rid = ref.partition("/")
    if not sep:
        return None  # no slash (``urn:uuid:...``, ``#id``): the pattern needs one
    if (rt == "http:" or rt == "https:") and "/_history/" not in ref and "\n" not in ref:
        n = len(rt)
        if ref[n:n + 2] != "//":
            return None  # ``http:`` without ``//``: neither a base nor a type
        # ``https://server/base/Type/id``: the pattern's lazy base backtracks to the last two segments
        # for type and id; the base is what is left, with at least one character after ``//``.
        head, _, rid = ref.rpartition("/")
        base, _, typ = head.rpartition("/")
        if len(base) <= n + 2 or not (_type_name(typ) and _id(rid)):
            return None
        return typ
    if _type_name(rt) and _id(rid):
        return rt  # the usual ``Type/id``: what LITERAL_REFERENCE matches with one slash, without the regex
    m = LITERAL_REFERENCE.match(ref)
    return m.group("type") if m else None


class Resolver:
    """Resolves literal references inside one validated resource (contained, Bundle entries)."""

    def __init__(self, root: Any, resources: list[Visited]) -> None:
        self.container: dict[int, dict[str, Any]] = {}
        self.contained: dict[int, dict[str, dict[str, Any]]] = {}
        self.by_full_url: dict[str, dict[str, Any]] = {}
        self.by_type_id: dict[str, dict[str, Any]] = {}
        for v in resources:
            res = v.node
            contained = res.get("contained")
            if isinstance(contained, list):
                ids = {}
                for c in contained:
                    if isinstance(c, dict):
                        self.container[id(c)] = res
                        if isinstance(c.get("id"), str):
                            ids[c["id"]] = c
                self.contained[id(res)] = ids
        self._index_bundle(root)
        # Nothing but ``#id`` can resolve in a resource outside any Bundle or Parameters (the usual case).
        self.local_only = not self.by_full_url and not self.by_type_id
        # Other references resolve whatever their source (fullUrl, Type/id): once per call. Profiles
        # (targetProfile), resolve() in invariants and Bundle checks ask for the same ones again.
        self._resolved: dict[str, dict[str, Any] | None] = {}
        # reference_type of the references met in this resource: a Bundle names its Patient, its
        # requester... from many entries.
        self._types: dict[str, str | None] = {}

    def reference_type(self, ref: str) -> str | None:
        """:func:`reference_type`, remembered for this resource (one validation)."""
        types = self._types
        if ref in types:
            return types[ref]
        found = types[ref] = reference_type(ref)
        return found

    def _index_bundle(self, res: Any) -> None:
        if isinstance(res, dict) and res.get("resourceType") == "Parameters":
            self._index_parameters(res.get("parameter"))
            return
        if not isinstance(res, dict) or res.get("resourceType") != "Bundle":
            return
        for e in res.get("entry", []) if isinstance(res.get("entry"), list) else []:
            if not isinstance(e, dict):
                continue
            r = e.get("resource")
            if not isinstance(r, dict):
                continue
            full = e.get("fullUrl")
            if isinstance(full, str):
                self.by_full_url.setdefault(full, r)
            rt, rid = r.get("resourceType"), r.get("id")
            if isinstance(rt, str) and isinstance(rid, str):
                self.by_type_id.setdefault(f"{rt}/{rid}", r)
            self._index_bundle(r)

    def _index_parameters(self, params: Any) -> None:
        """The resources of a Parameters (and of its parts) are one scope: an operation's input, such as
        $member-match's, refers from one to another by ``Type/id`` (parameters.html)."""
        for p in params if isinstance(params, list) else []:
            if not isinstance(p, dict):
                continue
            r = p.get("resource")
            if isinstance(r, dict):
                rt, rid = r.get("resourceType"), r.get("id")
                if isinstance(rt, str) and isinstance(rid, str):
                    self.by_type_id.setdefault(f"{rt}/{rid}", r)
                self._index_bundle(r)
            self._index_parameters(p.get("part"))

    def resolver_for(self, source: dict[str, Any]) -> Callable[[str], dict[str, Any] | None]:
        """``resolve()`` for FHIRPath evaluated inside ``source``."""
        return lambda ref: self.resolve(ref, source)

    def container_of(self, res: dict[str, Any]) -> dict[str, Any]:
        return self.container.get(id(res), res)

    def resolve(self, ref: str, source: dict[str, Any]) -> dict[str, Any] | None:
        if ref.startswith("#"):
            container = self.container_of(source)
            if ref == "#":
                return container
            return self.contained.get(id(container), {}).get(ref[1:])
        if self.local_only:
            return None
        resolved = self._resolved
        if ref in resolved:
            return resolved[ref]
        hit = self.by_full_url.get(ref)
        if hit is None:
            hit = self._by_type_id(ref)
        resolved[ref] = hit
        return hit

    def _by_type_id(self, ref: str) -> dict[str, Any] | None:
        """The entry ``Type/id`` of a literal reference names. When LITERAL_REFERENCE matches, its type and
        id are the last two segments (after ``/_history/v``): a key no entry has needs no regex."""
        head = ref
        if "/_history/" in ref:
            before, _, version = ref.rpartition("/_history/")
            if "/" not in version:
                head = before
        rest, _, rid = head.rpartition("/")
        key = f"{rest.rpartition('/')[2]}/{rid}"
        if key not in self.by_type_id:
            return None
        m = LITERAL_REFERENCE.match(ref)
        return self.by_type_id.get(f"{m.group('type')}/{m.group('id')}") if m else None


def _targets(v: Visited) -> set[str] | None:
    """Allowed target types of the reference's element; None when any resource will do."""
    prop: Prop = v.extra  # typed: its fields read directly in the compiled build
    if prop.targets is _UNSET:
        prop.targets = _compute_targets(prop)  # once per element: shapes are shared
    return prop.targets


def _compute_targets(prop: Any) -> set[str] | None:
    types: set[str] = set()
    for t in prop.elem.types:
        if t.code != "Reference":
            continue
        if not t.target_profiles:
            return None
        for tp in t.target_profiles:
            name = tp.partition("|")[0].rsplit("/", 1)[-1]
            if name in ("Resource", "DomainResource"):
                return None
            types.add(name)
    return types or None


def check_references(refs: list[Visited], resolver: Resolver, sink: IssueSink) -> None:
    for v in refs:
        node: dict[str, Any] = v.node  # typed: dict reads, not method calls, in the compiled build
        ref = node.get("reference")
        if not isinstance(ref, str):
            continue
        target_type = None
        if ref.startswith("#"):
            target = resolver.resolve(ref, v.resource)
            if target is None:
                sink.error("not-found", MsgId.REFERENCE_UNRESOLVED_CONTAINED,
                           f"The reference {ref} does not resolve to a contained resource", v.path)
                continue
            target_type = target.get("resourceType")
        declared = node.get("type")
        allowed = _targets(v)
        if not isinstance(declared, str) and allowed is None:
            continue  # any target will do, and no Reference.type to agree with: the type is not needed
        if not ref.startswith("#"):
            target_type = resolver.reference_type(ref)
            if target_type is None:
                target = resolver.resolve(ref, v.resource)
                if target is not None:
                    target_type = target.get("resourceType")
        if isinstance(declared, str) and target_type and "/" not in declared and declared != target_type:
            sink.error("invalid", MsgId.REFERENCE_TARGET_TYPE,
                       f"Reference.type is {declared} but the reference {ref} is to a {target_type}", v.path)
        if allowed is not None and isinstance(target_type, str) and target_type not in allowed:
            sink.error("structure", MsgId.REFERENCE_TARGET_TYPE,
                       f"The type '{target_type}' of the reference {ref} is not a valid target for "
                       f"{v.elem_path} (allowed: {', '.join(sorted(allowed))})", v.path)


def check_contained(resources: list[Visited], refs: list[Visited], sink: IssueSink) -> None:
    if len(resources) == 1:
        only: dict[str, Any] = resources[0].node
        if not only.get("contained"):
            return
    by_container: dict[int, list[Visited]] = {}
    for r in refs:
        by_container.setdefault(id(r.resource), []).append(r)
    for v in resources:
        res = v.node
        contained = res.get("contained")
        if not isinstance(contained, list) or not contained:
            continue
        ids: dict[str, int] = {}
        for i, c in enumerate(contained):
            if not isinstance(c, dict):
                continue
            here = f"{v.path}.contained[{i}]"
            if c.get("contained"):
                sink.error("invariant", MsgId.INVARIANT,
                           "Constraint failed: dom-2: If the resource is contained in another resource, "
                           "it SHALL NOT contain nested Resources", here)
            meta = c.get("meta")
            if isinstance(meta, dict):
                if "versionId" in meta or "lastUpdated" in meta:
                    sink.error("invariant", MsgId.INVARIANT,
                               "Constraint failed: dom-4: If a resource is contained in another resource, it "
                               "SHALL NOT have a meta.versionId or a meta.lastUpdated", here)
                if "security" in meta:
                    sink.error("invariant", MsgId.INVARIANT,
                               "Constraint failed: dom-5: If a resource is contained in another resource, it "
                               "SHALL NOT have a security label", here)
            if isinstance(c.get("id"), str):
                ids[c["id"]] = i
        _dom3(res, contained, ids, v.path, by_container, sink)


def _local_refs(node: Any, out: set[str]) -> None:
    """Every ``#id`` in references, and in uri/canonical values that point inside (e.g. Questionnaire)."""
    if isinstance(node, dict):
        for k, val in node.items():
            if k == "contained":
                continue
            if isinstance(val, str) and val.startswith("#"):
                out.add(val)
            else:
                _local_refs(val, out)
    elif isinstance(node, list):
        for x in node:
            _local_refs(x, out)


def _dom3(res: dict[str, Any], contained: list[Any], ids: dict[str, int], path: str,
          by_container: dict[int, list[Visited]], sink: IssueSink) -> None:
    direct: set[str] = set()
    _local_refs(res, direct)
    reached: set[str] = set()
    frontier = [r[1:] for r in direct if r[1:] in ids]
    while frontier:
        cid = frontier.pop()
        if cid in reached:
            continue
        reached.add(cid)
        inner: set[str] = set()
        _local_refs(contained[ids[cid]], inner)
        frontier.extend(r[1:] for r in inner if r[1:] in ids)
    for cid, i in ids.items():
        if cid in reached:
            continue
        c = contained[i]
        back: set[str] = set()
        _local_refs(c, back)
        if "#" in back:
            continue  # refers to its container: allowed by dom-3
        sink.error("invariant", MsgId.CONTAINED_NOT_REFERENCED,
                   "Constraint failed: dom-3: If the resource is contained in another resource, it SHALL be "
                   f"referred to from elsewhere in the resource (contained resource '{cid}' is not referenced)",
                   f"{path}.contained[{i}]")


def check_narrative(resources: list[Visited], sink: IssueSink, is_domain: Any) -> None:
    """dom-6: a top-level DomainResource should carry a narrative (best practice: warning)."""
    for v in resources:
        res = v.node
        if v.extra is not None:
            continue  # contained resources and entries have their own containers
        rt = res.get("resourceType")
        if isinstance(rt, str) and is_domain(rt) and "text" not in res:
            sink.warning("invariant", MsgId.INVARIANT,
                         "Constraint failed: dom-6: A resource should have narrative for robust management "
                         "(best practice)", v.path)
