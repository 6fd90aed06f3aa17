"""The typed hook points of the one write path (:class:`fhir_exchange.interactions.repository.Repository`).

Every write, whatever the path (REST, batch and transaction entries, message entries, the portal),
runs: profile selection and write rules (part of validation) → guards → store write → write hooks
(in the same unit of work) → commit hooks (after the commit). Each hook sees the actor, the stored
version before the write and the resource after it (None for a delete), as one :class:`Change`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.errors import Issue
from fhir_exchange.fhir import jsonio
from fhir_exchange.security.actor import Actor
from fhir_exchange.store.port import ResourceVersion, UnitOfWork


@dataclass(slots=True)
class Change:
    """One write as its hooks see it."""

    actor: Actor
    type: str
    id: str
    before: ResourceVersion | None  # the stored version it replaces (a deletion marker included), or None
    after: dict[str, Any] | None  # the resource written (meta not yet set by the server); None: a delete
    method: str  # POST | PUT | PATCH | DELETE
    # Set by a guard that vouches for a write to a resource another institution owns (the consult
    # workflow lets the consultant change the requester's Task): the isolation guard then lets it pass.
    authorized_by: str | None = None
    _before_resource: dict[str, Any] | None = None

    @property
    def deleted(self) -> bool:
        return self.after is None

    def before_resource(self) -> dict[str, Any] | None:
        """The stored resource before the write, parsed once (None when new or deleted)."""
        if self._before_resource is None and self.before is not None and not self.before.deleted:
            self._before_resource = jsonio.loads(self.before.body)
        return self._before_resource


class WriteUnit(Protocol):
    """What a hook may use inside the write's unit of work. It acts as the system: a guard must be
    able to check a referenced resource the actor itself may not read."""

    @property
    def uow(self) -> UnitOfWork: ...

    def after_commit(self, fn: Callable[[], Awaitable[None] | None]) -> None: ...

    async def visible(self, v: ResourceVersion) -> bool:
        """Whether the actor may see ``v`` (ownership, the shared directory, grants)."""
        ...

    async def record(self, type: str, resource: dict[str, Any]) -> ResourceVersion:
        """Store a resource the server makes (a Provenance) in the unit of work: no validation, guards
        or hooks."""
        ...

    def before_commit(self, key: str, check: Callable[[], Awaitable[None]]) -> None:
        """Run ``check`` once (per ``key``) when the unit of work is about to commit, after every write
        of it: rules across resources that a transaction may write in any order. Raising rolls back."""
        ...

    async def write_as_system(self, type: str, id: str, resource: dict[str, Any] | None, *,
                              method: str) -> ResourceVersion:
        """A write the server makes on its own account (a withdrawn consent cancels its consults)
        through the whole write path, in this unit of work; ``resource`` None deletes."""
        ...


ProfileSelector = Callable[[dict[str, Any]], list[str]]
"""Profiles a resource must conform to, read from its content (e.g. a consult ServiceRequest)."""

WriteRule = Callable[[dict[str, Any]], list[Issue]]
"""A rule a resource of one type must pass, reported with the validation issues (document Bundles)."""

Guard = Callable[[Change, WriteUnit], Awaitable[None]]
"""Decides whether the actor may make this change; raises a :class:`FhirError` naming the rule."""

WriteHook = Callable[[Change, ResourceVersion, WriteUnit], Awaitable[None]]
"""Runs after the store write, in the same unit of work (Provenance, derived records)."""

CommitHook = Callable[[Change, ResourceVersion], Awaitable[None] | None]
"""Runs once the unit of work has committed (definitions, notifications); dropped on rollback."""


@dataclass(slots=True)
class Hooks:
    profile_selectors: list[ProfileSelector] = field(default_factory=list)
    rules: dict[str, list[WriteRule]] = field(default_factory=dict)  # by resource type
    guards: list[Guard] = field(default_factory=list)
    on_write: list[WriteHook] = field(default_factory=list)
    after_commit: list[CommitHook] = field(default_factory=list)

    def add_rule(self, type: str, rule: WriteRule) -> None:
        rules = self.rules.setdefault(type, [])
        if rule not in rules:
            rules.append(rule)
