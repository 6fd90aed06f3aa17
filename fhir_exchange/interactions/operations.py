"""Extended operations (https://hl7.org/fhir/R4/operations.html): a registry that the router and the
CapabilityStatement both read (through the route table), so the two cannot drift."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse

OperationHandler = Callable[[Repository, FhirRequest, str | None, str | None], Awaitable[FhirResponse]]
"""(repository of the request, request, type or None, id or None) -> response."""


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # without the leading $
    handler: OperationHandler
    definition: str  # canonical URL of the OperationDefinition
    system: bool = False
    type: bool = False
    instance: bool = False
    resource_types: tuple[str, ...] = ()  # empty: every type
    affects_state: bool = False
    methods: tuple[str, ...] = ("POST",)
    # The SMART permission (c r u d s) it needs on its type (or on scope_type at system level); None:
    # what it does is checked where it does it (a message's entries, a validated body).
    permission: str | None = None
    scope_type: str | None = None
    admin: bool = False  # only admin clients (and the system) may run it


@dataclass(slots=True)
class OperationRegistry:
    operations: dict[str, Operation] = field(default_factory=dict)

    def register(self, op: Operation) -> None:
        self.operations[op.name] = op

    def get(self, name: str) -> Operation | None:
        return self.operations.get(name)
