"""What every interaction may use, wired once by the composition root (``api.app.create_app``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.clock import Clock
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.interactions.hooks import Hooks
from fhir_exchange.search.query import Visibility
from fhir_exchange.security.actor import Actor
from fhir_exchange.settings import Settings
from fhir_exchange.store.port import ResourceStore


class ResourceValidator(Protocol):
    def validate(self, resource: dict[str, Any], *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]: ...


class AccessPolicy(Protocol):
    """What an actor may see: a :class:`Visibility` the stores compile into every query (None: all)."""

    def visibility(self, actor: Actor, at: str) -> Visibility | None: ...


class OpenAccess:
    """Every actor sees everything: the server before authentication exists, and ``auth=off``."""

    def visibility(self, actor: Actor, at: str) -> Visibility | None:
        return None


@dataclass(slots=True)
class Services:
    settings: Settings
    definitions: Definitions
    store: ResourceStore
    validator: ResourceValidator
    clock: Clock = field(default_factory=Clock)
    hooks: Hooks = field(default_factory=Hooks)
    access: AccessPolicy = field(default_factory=OpenAccess)
    # Where AuditEvents live (their own store, append-only); None while auditing is off.
    audit_store: ResourceStore | None = None

    async def open(self) -> None:
        await self.store.open()
        if self.audit_store is not None:
            await self.audit_store.open()

    async def close(self) -> None:
        if self.audit_store is not None:
            await self.audit_store.close()
        await self.store.close()
