"""What every interaction may use, wired once by the composition root (``api.app.create_app``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.clock import Clock
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.settings import Settings
from fhir_exchange.store.port import ResourceStore


class ResourceValidator(Protocol):
    def validate(self, resource: dict[str, Any], *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]: ...


WriteRule = Callable[[dict[str, Any]], list[Issue]]
"""A rule a resource of one type must pass before it is stored (e.g. document Bundles: bdl-9/10/11)."""


@dataclass(slots=True)
class Services:
    settings: Settings
    definitions: Definitions
    store: ResourceStore
    validator: ResourceValidator
    clock: Clock = field(default_factory=Clock)
    # Hooks run after a conformance resource is written or deleted (definitions, search params).
    on_conformance_change: list[Callable[[dict[str, Any], bool], None]] = field(default_factory=list)
    # Extra write rules per resource type, run by every write path after validation.
    write_rules: dict[str, list[WriteRule]] = field(default_factory=dict)
    # Pick the profiles a resource must conform to from its content (e.g. a consult ServiceRequest).
    profile_selectors: list[Callable[[dict[str, Any]], list[str]]] = field(default_factory=list)
