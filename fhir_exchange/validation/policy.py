"""Validation policies: https://hl7.org/fhir/R4/validation.html#other (what else a validator may be asked to check).

The specification leaves some checks to the receiver's policy; the defaults here are those of a
general FHIR server, which must not refuse valid data. A deployment (or a caller such as the HL7
validator test cases, which carry these options per case) may choose stricter ones:

- ``example_urls=False``: a URL in a domain reserved for examples is an error. RFC 2606 reserves
  ``example.com``, ``example.net``, ``example.org`` (and their subdomains) and the ``.example``
  top-level domain for documentation; ISO/ITU reserve the OID arc ``2.999`` and IANA the private
  enterprise number 32473 (RFC 5612, ``1.3.6.1.4.1.32473``) for the same use. Such a URL in
  production data points nowhere (test data leaked into a live system). Checked on every ``uri``,
  ``url``, ``canonical`` and ``oid`` value and on ``Reference.reference``, except where a URL is a
  name rather than a pointer: a canonical resource's own ``url``, ``Bundle.entry.fullUrl``, and
  extensions (their ``url`` is judged by the extensions pass, their content by their definition).
- ``reference_targets="exist"``: a relative literal reference (``Patient/1``) must resolve — to a
  resource inside the one validated (a contained resource, a Bundle entry, another resource of the
  same Parameters) or, through ``resolve_reference``, to a resource on the server: referential
  integrity (references.html#literal). The default (``"type"``) checks only the target's type, as a
  server accepting data about resources it does not hold yet must. Absolute references to other
  servers are not fetched.
- ``unknown_extensions="error"``: an extension the server has no definition for is an error unless
  its url starts with one of ``extension_domains`` (the default is a warning: applications should
  not reject resources merely because they contain extensions, extensibility.html). For a closed
  network whose members agree on the extensions they exchange.
- ``validate_contained=False``: contained resources are not validated (nor dom-3 judged on their
  container): their content is the sender's business, as when a receiver keeps them opaque.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fhir_exchange.errors import Issue
from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.references import LITERAL_REFERENCE, Resolver
from fhir_exchange.validation.shapes import COMPLEX, PRIM, RESOURCE, Shape, ShapeBuilder
from fhir_exchange.validation.structure import Visited

MSG_EXAMPLE_URL = "url-example-domain"
MSG_REFERENCE_UNRESOLVED = "ref-unresolved"

_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
_EXAMPLE_OID_ARCS = ("2.999", "1.3.6.1.4.1.32473")
_URL_TYPES = frozenset({"uri", "url", "canonical", "oid"})


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    example_urls: bool = True
    reference_targets: str = "type"  # or "exist"
    # (resource type, id) -> whether the server holds it; consulted by reference_targets="exist".
    resolve_reference: Callable[[str, str], bool] | None = None
    validate_contained: bool = True
    unknown_extensions: str = "warning"  # or "error"
    extension_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.reference_targets not in ("type", "exist"):
            raise ValueError(f"reference_targets is 'type' or 'exist', not {self.reference_targets!r}")
        if self.unknown_extensions not in ("warning", "error"):
            raise ValueError(f"unknown_extensions is 'warning' or 'error', not {self.unknown_extensions!r}")

    @property
    def is_default(self) -> bool:
        """True when no check of :func:`check_policy` applies (extensions are judged by their pass)."""
        return self.example_urls and self.reference_targets == "type" and self.validate_contained

    def refuses_unknown_extension(self, url: str) -> bool:
        return self.unknown_extensions == "error" and not url.startswith(self.extension_domains)


DEFAULT_POLICY = ValidationPolicy()


def is_example_url(url: str) -> bool:
    """True for a URL whose host (or OID) is reserved for examples and documentation."""
    if url.startswith("urn:oid:"):
        oid = url[8:].partition("|")[0]
        return any(oid == arc or oid.startswith(arc + ".") for arc in _EXAMPLE_OID_ARCS)
    try:
        host = urlsplit(url.partition("|")[0]).hostname
    except ValueError:
        return False
    if not host:
        return False
    host = host.rstrip(".").lower()
    return host.endswith(".example") or any(host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS)


def check_policy(policy: ValidationPolicy, resource: dict[str, Any], rt: str, refs: list[Visited],
                 resolver: Resolver, shapes: ShapeBuilder, sink: IssueSink) -> None:
    """The checks a stricter policy adds; nothing under the default policy."""
    if not policy.example_urls:
        shape = shapes.resource_shape(rt)
        if shape is not None:
            _ExampleUrls(shapes, resolver, sink).walk(resource, shape, rt, resource)
    if policy.reference_targets == "exist":
        check_reference_targets(refs, resolver, policy.resolve_reference, sink)


def filter_issues(policy: ValidationPolicy, issues: list[Issue]) -> list[Issue]:
    """Drop what the policy does not want judged (the content of contained resources, and dom-3)."""
    if policy.validate_contained:
        return issues
    return [i for i in issues if not any(".contained[" in e or e.startswith("contained[") for e in i.expression)]


def check_reference_targets(refs: list[Visited], resolver: Resolver,
                            exists: Callable[[str, str], bool] | None, sink: IssueSink) -> None:
    """Referential integrity: every relative literal reference resolves, in the resource or on the server."""
    for v in refs:
        ref = v.node.get("reference")
        if not isinstance(ref, str) or ref.startswith("#"):
            continue  # contained references are always checked (references.py)
        m = LITERAL_REFERENCE.match(ref)
        if m is None or m.group("base"):
            continue  # urn:uuid (Bundle rules) and other servers' resources: not fetched
        if resolver.resolve(ref, v.resource) is not None:
            continue
        if exists is not None and exists(m.group("type"), m.group("id")):
            continue
        sink.error("not-found", MSG_REFERENCE_UNRESOLVED,
                   f"The reference {ref} does not resolve: no {m.group('type')} with id '{m.group('id')}' is in "
                   "the resource or on this server", v.path)


def _is_pointer(shape: Shape, type_code: str, key: str) -> bool:
    """A URL-typed value that points somewhere, rather than names something."""
    if type_code not in _URL_TYPES:
        return False
    if key == "url" and shape.resource_type is not None:
        return False  # a canonical resource's own identity
    return not (key == "fullUrl" and shape.name == "Bundle.entry")


class _ExampleUrls:
    """One walk over the resource, typed by the shapes, visiting URL-typed values."""

    def __init__(self, shapes: ShapeBuilder, resolver: Resolver, sink: IssueSink) -> None:
        self.shapes = shapes
        self.resolver = resolver
        self.sink = sink

    def walk(self, obj: dict[str, Any], shape: Shape, path: str, resource: dict[str, Any]) -> None:
        if shape.is_extension:
            return
        for key, value in obj.items():
            prop = shape.props.get(key)
            if prop is None:
                continue
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                here = f"{path}.{prop.segment}[{i}]" if isinstance(value, list) else f"{path}.{prop.segment}"
                if prop.kind == PRIM:
                    if isinstance(item, str) and _is_pointer(shape, prop.type_code, key):
                        self._check(item, here)
                elif not isinstance(item, dict):
                    continue
                elif prop.kind == RESOURCE:
                    rt = item.get("resourceType")
                    inner = self.shapes.resource_shape(rt) if isinstance(rt, str) else None
                    if inner is not None:
                        self.walk(item, inner, here, item)
                elif prop.kind == COMPLEX:
                    inner = self.shapes.resolve(prop)
                    if inner.name == "Reference":
                        ref = item.get("reference")
                        if isinstance(ref, str) and self.resolver.resolve(ref, resource) is None:
                            self._check(ref, f"{here}.reference")
                    self.walk(item, inner, here, resource)

    def _check(self, url: str, path: str) -> None:
        if is_example_url(url):
            self.sink.error("invalid", MSG_EXAMPLE_URL,
                            f"The URL {url} is in a domain reserved for examples, which this server does not accept",
                            path)
