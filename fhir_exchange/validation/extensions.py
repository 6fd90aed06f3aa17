"""Extensions by URL: https://hl7.org/fhir/R4/extensibility.html and https://hl7.org/fhir/R4/defining-extensions.html.

Every extension met in the walk is looked up by its ``url``:

- found: the extension's context (``StructureDefinition.context``) must admit the element that
  carries it; its ``isModifier`` must agree with where it is used (``modifierExtension`` or not);
  its value and nested extensions are validated against the definition as a profile.
- not found: an unknown ``modifierExtension`` is an error — a receiver cannot safely ignore it
  (extensibility.html#modifierExtension). An unknown ordinary extension is a warning: it may be
  ignored, and HAPI FHIR and Firely Server accept them by default (the HL7 Java validator's default
  is stricter: an error unless the domain is allowed; see the validator-case disagreements).

Relative URLs are only allowed inside complex extensions, where the parent's definition names them.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.validation.issues import MsgId
from fhir_exchange.validation.profile import ProfileContext, ProfileError, ProfileValidator
from fhir_exchange.validation.shapes import ShapeBuilder
from fhir_exchange.validation.structure import Visited

# Contexts that admit any element of a kind.
_ANY_ELEMENT = frozenset({"Element", "Base"})

# Places the R4 core definitions themselves use an extension outside its declared context; the HL7
# reference validator accepts them, and so must we (every core snapshot would fail otherwise).
CONTEXT_ERRATA: dict[str, frozenset[str]] = {
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type": frozenset({"ElementDefinition.type"}),
}


def _context_ok(sd: dict[str, Any], host_path: str, host_type: str, shapes: ShapeBuilder) -> bool:
    contexts = sd.get("context") or []
    if not contexts or host_path in CONTEXT_ERRATA.get(sd.get("url", ""), ()):
        return True
    for c in contexts:
        kind, expr = c.get("type"), c.get("expression", "")
        if kind in ("fhirpath", None):
            return True  # a FHIRPath context needs the full engine; never a false error
        if kind == "extension":
            if host_type == "Extension":
                return True
            continue
        if expr in _ANY_ELEMENT or expr in (host_path, host_type):
            return True
        if expr == "BackboneElement" and host_type == "BackboneElement":
            return True
        if expr in ("Resource", "DomainResource") and "." not in host_path and shapes.kind(host_path) == "resource":
            return True
        # A datatype context admits its profiles' and subtypes' instances, e.g. Quantity for an Age.
        schema = shapes.schema(host_type) if host_type[:1].isupper() else None
        while schema is not None and schema.base_definition:
            base = schema.base_definition.rsplit("/", 1)[-1]
            if base == expr:
                return True
            schema = shapes.schema(base) if base not in ("Element", "Base", "Resource") else None
    return False


def check_extensions(exts: list[Visited], profiles: ProfileValidator, shapes: ShapeBuilder,
                     ctx: ProfileContext) -> None:
    sink = ctx.sink
    for v in exts:
        node = v.node
        url = node.get("url")
        if not isinstance(url, str):
            continue
        is_modifier, host_type = v.extra
        if "://" not in url and not url.startswith("urn:"):
            if host_type != "Extension":
                sink.error("structure", MsgId.EXTENSION_URL_FORMAT,
                           f"The extension url '{url}' must be absolute outside a complex extension", v.path)
            continue
        try:
            schema = profiles.schema(url)
        except ProfileError as e:
            sink.error("processing", MsgId.PROFILE_UNUSABLE, str(e), v.path)
            continue
        if schema is None or schema.type != "Extension":
            if is_modifier:
                sink.error("structure", MsgId.MODIFIER_EXTENSION_UNKNOWN,
                           f"The modifier extension {url} is not known, so the resource cannot be safely "
                           "processed", v.path)
            else:
                sink.warning("structure", MsgId.EXTENSION_UNKNOWN,
                             f"The extension {url} is not known to this server; its content was not checked",
                             v.path)
            continue
        sd = schema.sd
        if not _context_ok(sd, v.elem_path, host_type, shapes):
            allowed = ", ".join(f"{c.get('type')}:{c.get('expression')}" for c in sd.get("context") or [])
            sink.error("structure", MsgId.EXTENSION_CONTEXT,
                       f"The extension {url} is not allowed on {v.elem_path} (allowed contexts: {allowed})",
                       v.path)
        defined_modifier = bool(schema.root.raw.get("isModifier"))
        if defined_modifier and not is_modifier:
            sink.error("structure", MsgId.EXTENSION_CONTEXT,
                       f"The extension {url} is a modifier extension and must be in modifierExtension", v.path)
        elif is_modifier and not defined_modifier:
            sink.error("structure", MsgId.EXTENSION_CONTEXT,
                       f"The extension {url} is not a modifier extension and must not be in modifierExtension",
                       v.path)
        outer = ctx.resource
        ctx.resource = v.resource
        try:
            profiles.validate_value(node, url, "Extension", v.path, ctx)
        finally:
            ctx.resource = outer
