"""Slicing discriminators of a profile: https://hl7.org/fhir/R4/profiling.html#discriminator.

"The path is a FHIRPath expression ... evaluated from the element being sliced": a discriminator
whose path names nothing the sliced element can hold (``type`` on an Extension) can never
discriminate, so the profile is in error (the HL7 reference validator reports the same). Checked
here: the first step of each discriminator path — after ``$this``, and unless it is a function
such as ``resolve()``, ``extension('...')`` or ``ofType(...)`` — is a child element of one of the
sliced element's types (or of the element itself, for a backbone element).
"""

from __future__ import annotations

import re
from typing import Any

from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.shapes import ShapeBuilder

_STEP = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _first_step(path: str) -> str | None:
    """The first element name of a discriminator path; None when not an element name."""
    if path.startswith("$this"):
        path = path[5:].lstrip(".")
    if not path:
        return None
    head = path.split(".", 1)[0]
    if "(" in head:
        return None  # resolve(), extension('url'), ofType(T): not checked here
    m = _STEP.fullmatch(head)
    return m.group(0) if m else None


def _children(elements: list[dict[str, Any]], eid: str, types: list[str], shapes: ShapeBuilder) -> set[str] | None:
    """Names of what the element ``eid`` can hold; None when that cannot be told here."""
    names: set[str] = set()
    prefix = eid + "."
    for e in elements:
        other = str(e.get("id", ""))
        if other.startswith(prefix):
            rest = other[len(prefix):]
            if "." not in rest and ":" not in rest:
                names.add(rest[:-3] if rest.endswith("[x]") else rest)
    for code in types:
        if code in ("BackboneElement", "Element"):
            continue
        schema = shapes.schema(code)
        if schema is None:
            return None  # a type we do not know: say nothing
        for child in schema.root.children:
            names.add(child.name)
    return names or None


def check_discriminators(sd: dict[str, Any], elements: list[dict[str, Any]], path: str, shapes: ShapeBuilder,
                         sink: IssueSink) -> None:
    """Every discriminator the profile's differential declares names something the sliced element
    can hold, as the generated snapshot ``elements`` says."""
    by_id = {str(e.get("id")): e for e in elements if isinstance(e, dict)}
    diff = (sd.get("differential") or {}).get("element")
    for j, d in enumerate(diff if isinstance(diff, list) else []):
        slicing = d.get("slicing") if isinstance(d, dict) else None
        if not isinstance(slicing, dict):
            continue
        e = by_id.get(str(d.get("id")))
        if e is None or e.get("contentReference"):
            continue
        eid = str(e.get("id"))
        raw_types = e.get("type")
        types = [str(t.get("code")) for t in raw_types if isinstance(t, dict) and t.get("code")] \
            if isinstance(raw_types, list) else []
        discriminators = slicing.get("discriminator")
        if not isinstance(discriminators, list):
            continue
        children: set[str] | None = None
        for k, disc in enumerate(discriminators):
            dpath = disc.get("path") if isinstance(disc, dict) else None
            step = _first_step(dpath) if isinstance(dpath, str) else None
            if step is None:
                continue
            if children is None:
                children = _children(elements, eid, types, shapes)
                if children is None:
                    break
            if step not in children:
                sink.error("invalid", MsgId.PROFILE_UNUSABLE,
                           f"The discriminator path '{dpath}' does not name an element of {e.get('path')}, the "
                           "element being sliced (profiling.html#discriminator)",
                           f"{path}.differential.element[{j}].slicing.discriminator[{k}]")
