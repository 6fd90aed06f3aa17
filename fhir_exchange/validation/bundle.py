"""Bundle rules: https://hl7.org/fhir/R4/bundle.html#rules and the Bundle invariants bdl-1..bdl-12.

Checked natively (they need the whole Bundle, and cost nothing here):

- ``fullUrl`` is unique, except for entries of different versions (``meta.versionId``) of one
  resource, and in history Bundles (bdl-7);
- an http(s) ``fullUrl`` ends with the resource's ``Type/id`` (bundle.html#fullUrl);
- ``fullUrl`` is an absolute URI (it has a scheme: ``http:``, ``urn:`` ...);
- in a document Bundle every literal reference resolves to exactly one entry, versioned references
  to the entry with that ``meta.versionId`` (bundle.html#document); a relative reference from an
  entry with a RESTful ``fullUrl`` resolves against that fullUrl's base (bundle.html#references:
  ``Patient/1`` in ``http://a/fhir/Composition/1`` is ``http://a/fhir/Patient/1``, not an entry of
  another server);
- in a document Bundle, a ``narrativeLink`` extension (``<fullUrl>#<fragment>``, or ``#<fragment>``
  for the resource's own narrative) names an entry of the document whose narrative has exactly one
  element with that ``id`` (or ``a/@name``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.references import LITERAL_REFERENCE, Resolver
from fhir_exchange.validation.structure import Visited
from fhir_exchange.validation.xhtml import anchors

_ABSOLUTE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_RESTFUL: Final = re.compile(r"^(?P<base>https?://.+)/[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
NARRATIVE_LINK: Final = "http://hl7.org/fhir/StructureDefinition/narrativeLink"


def check_bundle(resources: list[Visited], refs: list[Visited], resolver: Resolver, sink: IssueSink,
                 extensions: list[Visited] | None = None) -> None:
    for v in resources:
        node: dict[str, Any] = v.node  # typed: dict reads, not method calls, in the compiled build
        if node.get("resourceType") == "Bundle":
            _one(node, v.path, sink)
            if node.get("type") == "document":
                _document_references(node, refs, resolver, sink)
                if extensions:
                    _narrative_links(node, extensions, resolver, sink)


def _narratives(res: dict[str, Any]) -> list[str]:
    """The XHTML of a resource's narrative, and of its sections for a Composition."""
    out: list[str] = []
    text = res.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        out.append(text["div"])
    stack = list(dicts(res.get("section"))) if res.get("resourceType") == "Composition" else []
    while stack:
        section = stack.pop()
        st = section.get("text")
        if isinstance(st, dict) and isinstance(st.get("div"), str):
            out.append(st["div"])
        stack.extend(dicts(section.get("section")))
    return out


def _narrative_links(bundle: dict[str, Any], extensions: list[Visited], resolver: Resolver,
                     sink: IssueSink) -> None:
    """narrativeLink values of the document's entries point at one element of an entry's narrative."""
    entries = {id(e["resource"]): e for e in dicts(bundle.get("entry")) if isinstance(e.get("resource"), dict)}
    by_url = {e.get("fullUrl"): e["resource"] for e in entries.values() if isinstance(e.get("fullUrl"), str)}
    for v in extensions:
        node = v.node
        if node.get("url") != NARRATIVE_LINK or id(resolver.container_of(v.resource)) not in entries:
            continue
        link = node.get("valueUrl", node.get("valueUri"))
        if not isinstance(link, str) or "#" not in link:
            continue
        target_url, _, fragment = link.partition("#")
        target = resolver.container_of(v.resource) if not target_url else by_url.get(target_url)
        if target is None:
            sink.error("not-found", MsgId.REFERENCE_UNRESOLVED_CONTAINED,
                       f"The narrative link {link} names {target_url}, which is not an entry of this document Bundle",
                       v.path)
            continue
        found = sum(1 for div in _narratives(target) for a in anchors(div) if a == fragment)
        if found == 0:
            sink.error("not-found", MsgId.REFERENCE_UNRESOLVED_CONTAINED,
                       f"The narrative link {link}: no element with id '{fragment}' in the narrative of "
                       f"{target_url or 'this resource'}", v.path)
        elif found > 1:
            sink.error("invalid", MsgId.REFERENCE_UNRESOLVED_CONTAINED,
                       f"The narrative link {link}: {found} elements have the id '{fragment}' in the narrative "
                       f"of {target_url or 'this resource'}", v.path)


def _document_references(bundle: dict[str, Any], refs: list[Visited], resolver: Resolver, sink: IssueSink) -> None:
    """A document is self-contained: every literal reference resolves to one of its entries."""
    entries = [e for e in dicts(bundle.get("entry")) if isinstance(e.get("resource"), dict)]
    members = {id(e["resource"]): e for e in entries}
    for v in refs:
        source = members.get(id(resolver.container_of(v.resource)))
        if source is None:
            continue
        ref = v.node.get("reference")
        if not isinstance(ref, str) or ref.startswith("#"):
            continue
        m = LITERAL_REFERENCE.match(ref)
        version = m.group("version") if m else None
        if m:
            tail = f"{m.group('type')}/{m.group('id')}"
            restful = _RESTFUL.match(source.get("fullUrl") or "") if isinstance(source.get("fullUrl"), str) else None
            if m.group("base") is None and restful is not None:
                # Relative to the referencing entry's server (bundle.html#references).
                expected = f"{restful.group('base')}/{tail}"
                candidates = [e for e in entries if e.get("fullUrl") == expected]
            else:
                candidates = [e for e in entries if isinstance(e.get("fullUrl"), str)
                              and (e["fullUrl"] == tail or e["fullUrl"].endswith("/" + tail)
                                   or (m.group("base") and e["fullUrl"] == f"{m.group('base')}/{tail}"))]
        else:
            candidates = [e for e in entries if e.get("fullUrl") == ref]
        if version is not None:
            candidates = [e for e in candidates
                          if isinstance(e["resource"].get("meta"), dict)
                          and e["resource"]["meta"].get("versionId") == version]
        if not candidates:
            sink.error("not-found", MsgId.REFERENCE_UNRESOLVED_CONTAINED,
                       f"The reference {ref} does not resolve to an entry of this document Bundle "
                       "(bundle.html#document)", v.path)
        elif len(candidates) > 1:
            sink.error("invalid", MsgId.REFERENCE_UNRESOLVED_CONTAINED,
                       f"The reference {ref} matches {len(candidates)} entries of this document Bundle; "
                       "a versioned reference is needed", v.path)


def _one(bundle: dict[str, Any], path: str, sink: IssueSink) -> None:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return
    btype = bundle.get("type")
    seen: dict[tuple[str, Any], int] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            continue
        full = e.get("fullUrl")
        res = e.get("resource")
        here = f"{path}.entry[{i}]"
        if not isinstance(full, str):
            continue
        if _ABSOLUTE.match(full) is None:
            sink.error("invalid", MsgId.BUNDLE_DUPLICATE,
                       f"The fullUrl '{full}' must be an absolute URL (bundle.html#fullUrl)", f"{here}.fullUrl")
        version = None
        if isinstance(res, dict) and isinstance(res.get("meta"), dict):
            meta: dict[str, Any] = res["meta"]
            version = meta.get("versionId")
        key = (full, version)
        if key in seen and btype != "history":
            sink.error("invariant", MsgId.BUNDLE_DUPLICATE,
                       f"Constraint failed: bdl-7: FullUrl must be unique in a bundle, or else entries with the "
                       f"same fullUrl must have different meta.versionId (entry {seen[key]} has {full} too)", here)
        else:
            seen[key] = i
        restful = full.startswith(("http://", "https://")) and "/_history/" not in full
        if (restful and isinstance(res, dict) and isinstance(res.get("id"), str)
                and isinstance(res.get("resourceType"), str)
                and not full.endswith(f"/{res['resourceType']}/{res['id']}")):
            sink.error("invalid", MsgId.BUNDLE_DUPLICATE,
                       f"The fullUrl {full} does not match the resource {res['resourceType']}/{res['id']}",
                       f"{here}.fullUrl")
