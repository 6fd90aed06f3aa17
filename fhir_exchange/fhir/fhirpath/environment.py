"""What one evaluation reaches beyond its input: http://hl7.org/fhirpath/N1/#environment-variables
and https://hl7.org/fhir/R4/fhirpath.html#variables.

The :class:`Environment` of one call (``%resource``, ``%rootResource``, the clock of ``now()``)
and the hooks a caller injects (``resolve()``, ``conformsTo()``, ``memberOf()``, ``trace()``).
Functions reach it through fhirpathpy's context (:func:`env_of`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.values import FHIR_TYPES, data_of, is_subtype

Resolver = Callable[[str], Mapping[str, Any] | None]
ConformsTo = Callable[[Mapping[str, Any], str], bool]
MemberOf = Callable[[Any, str], bool | None]
Tracer = Callable[[str, list[Any]], None]

_RESOURCE_TYPES = frozenset(t for t in FHIR_TYPES if is_subtype(t, "Resource") and t[0].isupper())
_REFERENCE_RE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")


class HookError(Exception):
    """Carries an exception raised by an injected hook past fhirpathpy, to be re-raised as is."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def call_hook(hook: Callable[..., Any], *args: Any) -> Any:
    try:
        return hook(*args)
    except Exception as exc:
        raise HookError(exc) from exc


@dataclass(slots=True)
class Environment:
    """What one evaluation may reach beyond its input: the resources and the injected hooks."""

    resource: Any
    root_resource: Any
    now: datetime | None
    resolver: Resolver | None = None
    conforms_to: ConformsTo | None = None
    member_of: MemberOf | None = None
    tracer: Tracer | None = None
    _now_cache: dict[str, Temporal] = field(default_factory=dict)

    def clock(self, kind: str) -> Temporal:
        # now(), today() and timeOfDay() are constant within one evaluation (spec: now()).
        if kind not in self._now_cache:
            if self.now is None:
                self.now = datetime.now().astimezone()  # local time with its offset (spec: now())
            self._now_cache[kind] = Temporal.from_datetime(self.now, kind)
        return self._now_cache[kind]

    def resolve(self, reference: str) -> Mapping[str, Any] | None:
        """Contained ('#id'), then the enclosing Bundle, then the resolver, then a typed stub."""
        if reference.startswith("#"):
            return self._contained(reference[1:])
        for holder in (self.resource, self.root_resource):
            found = _in_bundle(holder, reference)
            if found is not None:
                return found
        if self.resolver is not None:
            found = call_hook(self.resolver, reference)
            if found is not None:
                return found
        m = _REFERENCE_RE.fullmatch(reference)
        if m and m.group(1) in _RESOURCE_TYPES:
            # Enough for `resolve() is Patient`, which is how the R4 search parameters use it
            # (the same placeholder HAPI's search indexer resolves to).
            return {"resourceType": m.group(1), "id": m.group(2)}
        return None

    def _contained(self, local_id: str) -> Mapping[str, Any] | None:
        for holder in (self.root_resource, self.resource):
            holder = data_of(holder)
            if not isinstance(holder, Mapping):
                continue
            if local_id == "":
                return holder
            for contained in holder.get("contained", ()):
                if isinstance(contained, Mapping) and contained.get("id") == local_id:
                    return contained
        return None


def _in_bundle(holder: Any, reference: str) -> Mapping[str, Any] | None:
    bundle = data_of(holder)
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        return None
    typed = _REFERENCE_RE.fullmatch(reference)
    for entry in bundle.get("entry", ()):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
            continue
        full_url = entry.get("fullUrl")
        resource = entry["resource"]
        if full_url == reference:
            return resource
        if typed and (
            (isinstance(full_url, str) and full_url.endswith(f"/{typed.group(1)}/{typed.group(2)}"))
            or (resource.get("resourceType") == typed.group(1) and resource.get("id") == typed.group(2))
        ):
            return resource
    return None


def env_of(ctx: dict[str, Any]) -> Environment:
    return ctx["fx"]
