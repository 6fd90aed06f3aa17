"""Extensions by URL: https://hl7.org/fhir/R4/extensibility.html and https://hl7.org/fhir/R4/defining-extensions.html.

Every extension met in the walk is looked up by its ``url``:

- found: the extension's context (``StructureDefinition.context``) must admit the element that
  carries it — an ``element`` context by the defining element's path, the path as the instance
  spells it (a ``contentReference`` element: ``CapabilityStatement.rest.operation``), the host's
  type or a supertype; an ``extension`` context only inside an extension with that url; a
  ``fhirpath`` context is not judged; every ``contextInvariant`` holds on the carrying element
  (``%extension`` the extension). Its ``isModifier`` must agree with where it is used
  (``modifierExtension`` or not); its value and nested extensions are validated against the
  definition as a profile.
- not found: an unknown ``modifierExtension`` is an error — a receiver cannot safely ignore it
  (extensibility.html#modifierExtension). An unknown ordinary extension is a warning: applications
  should not reject resources merely because they contain extensions (extensibility.html), and HAPI
  FHIR and Firely Server accept them by default. A deployment may refuse them
  (``ValidationPolicy.unknown_extensions="error"``, except under ``extension_domains``): the HL7 Java
  validator's default, which two of its test cases show (see the validator-case disagreements).

Relative URLs are only allowed inside complex extensions, where the parent's definition names them.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fhir_exchange.fhir import fhirpath
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.policy import DEFAULT_POLICY, ValidationPolicy
from fhir_exchange.validation.profile import ProfileContext, ProfileError, ProfileValidator
from fhir_exchange.validation.shapes import ShapeBuilder
from fhir_exchange.validation.structure import Visited

# Contexts that admit any element of a kind.
_ANY_ELEMENT: Final = frozenset({"Element", "Base"})

# Places the R4 core definitions themselves use an extension outside its declared context; the HL7
# reference validator accepts them, and so must we (every core snapshot would fail otherwise).
CONTEXT_ERRATA: Final[dict[str, frozenset[str]]] = {
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type": frozenset({"ElementDefinition.type"}),
    # The primitive types' regexes sit on ElementDefinition.type (datatypes.html), not ElementDefinition.
    "http://hl7.org/fhir/StructureDefinition/regex": frozenset({"ElementDefinition.type"}),
    # The publisher marks normative content on every kind of definition, not only StructureDefinition.
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-normative-version": frozenset(
        {"CodeSystem", "ValueSet", "OperationDefinition", "ElementDefinition"}),
    "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments": frozenset({"CodeSystem.concept"}),
}


_INDEX: Final = re.compile(r"\[\d+\]|\.ofType\([^)]*\)")


def instance_host_path(v: Visited) -> str:
    """The logical path of the element carrying an extension, as the instance spells it.

    It differs from the defining element's path for a contentReference element:
    ``CapabilityStatement.rest.operation`` is defined by ``CapabilityStatement.rest.resource.operation``,
    and a context names the former (extensibility.html#context)."""
    rt = v.resource.get("resourceType", "")
    rel = v.path[len(v.resource_path):] if v.path.startswith(v.resource_path) else ""
    rel = _INDEX.sub("", rel)
    head, _, _ = rel.rpartition(".")
    return f"{rt}{head}"


def _same_canonical(a: str, b: str) -> bool:
    return a.partition("|")[0] == b.partition("|")[0]


def _parent_extension(v: Visited, by_path: dict[str, Visited]) -> Visited | None:
    """The extension that holds the (nested) extension ``v``, when ``v`` is nested in one."""
    head, sep, _ = v.path.rpartition(".extension[")
    if not sep:
        head, sep, _ = v.path.rpartition(".modifierExtension[")
    return by_path.get(head) if sep else None


def _context_ok(sd: dict[str, Any], host_path: str, host_type: str, shapes: ShapeBuilder,
                instance_path: str | None = None, parent_url: str | None = None) -> bool:
    """Whether a context admits the host; ``instance_path`` (None: not asked) only ever admits more."""
    contexts = sd.get("context") or []
    errata = CONTEXT_ERRATA.get(sd.get("url", ""), ())
    if not contexts or host_path in errata or host_type in errata or (
            instance_path is not None and instance_path in errata):
        return True
    for c in contexts:
        kind, expr = c.get("type"), c.get("expression", "")
        if kind in ("fhirpath", None):
            return True  # a FHIRPath context needs the full engine; never a false error
        if kind == "extension":
            # Only inside an extension with the named url (extensibility.html#context).
            if host_type == "Extension" and (parent_url is None or _same_canonical(parent_url, expr)):
                return True
            continue
        if expr in _ANY_ELEMENT or expr in (host_path, host_type, instance_path):
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


_STEP: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)(?:\.ofType\(([A-Za-z]+)\))?(?:\[(\d+)\])?")


def host_node(v: Visited) -> Any:
    """The element that carries extension ``v``, found by walking its path down from its resource."""
    if not v.path.startswith(v.resource_path):
        return None
    rel, sep, _ = v.path[len(v.resource_path):].rpartition(".extension[")
    if not sep:
        rel, sep, _ = v.path[len(v.resource_path):].rpartition(".modifierExtension[")
    node: Any = v.resource
    pos = 0
    while pos < len(rel):
        m = _STEP.match(rel, pos)
        if m is None or not isinstance(node, dict):
            return None
        name, of_type, index = m.groups()
        key = name + of_type[0].upper() + of_type[1:] if of_type else name
        node = node.get(key)
        if index is not None:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        pos = m.end()
    return node


def _context_invariants(v: Visited, url: str, expressions: list[str], sink: IssueSink) -> None:
    """StructureDefinition.contextInvariant: FHIRPath rules on the element that carries the extension,
    with ``%extension`` the extension itself (extensibility.html#context)."""
    host = host_node(v)
    if not isinstance(host, dict):
        return  # a primitive host: its value is not an element the expressions can navigate
    for expression in expressions:
        try:
            result = fhirpath.compile(expression).evaluate(v.resource, host, variables={"extension": v.node},
                                                          context_path=v.elem_path)
            holds = fhirpath.constraint_holds(result)
        except Exception as e:  # an expression we cannot evaluate is not the resource's fault
            sink.info("informational", MsgId.INVARIANT_UNEVALUATED,
                      f"The context invariant '{expression}' of {url} could not be evaluated: {e}", v.path)
            continue
        if not holds:
            sink.error("invariant", MsgId.EXTENSION_CONTEXT,
                       f"The extension {url} is not allowed here: its context invariant '{expression}' does not "
                       "hold", v.path)


def check_extensions(exts: list[Visited], profiles: ProfileValidator, shapes: ShapeBuilder,
                     ctx: ProfileContext, policy: ValidationPolicy = DEFAULT_POLICY) -> None:
    sink = ctx.sink
    by_path = {v.path: v for v in exts}
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
            elif policy.refuses_unknown_extension(url):
                sink.error("structure", MsgId.EXTENSION_UNKNOWN,
                           f"The extension {url} is not known to this server, which refuses unknown extensions",
                           v.path)
            else:
                sink.warning("structure", MsgId.EXTENSION_UNKNOWN,
                             f"The extension {url} is not known to this server; its content was not checked",
                             v.path)
            continue
        sd = schema.sd
        parent = _parent_extension(v, by_path) if host_type == "Extension" else None
        parent_url = parent.node.get("url") if parent is not None else None
        parent_url = parent_url if isinstance(parent_url, str) else None
        # The instance's spelling of the host's path (a regex over the path) only when the defining
        # path does not already admit it: it differs for contentReference elements alone.
        if not (_context_ok(sd, v.elem_path, host_type, shapes, None, parent_url)
                or _context_ok(sd, v.elem_path, host_type, shapes, instance_host_path(v), parent_url)):
            allowed = ", ".join(f"{c.get('type')}:{c.get('expression')}" for c in sd.get("context") or [])
            sink.error("structure", MsgId.EXTENSION_CONTEXT,
                       f"The extension {url} is not allowed on {v.elem_path} (allowed contexts: {allowed})",
                       v.path)
        invariants = sd.get("contextInvariant")
        if isinstance(invariants, list) and invariants:
            _context_invariants(v, url, [x for x in invariants if isinstance(x, str)], sink)
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
