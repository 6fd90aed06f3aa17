"""Interactions inside a caller's unit of work: https://hl7.org/fhir/R4/http.html#transaction

Every interaction that touches the store runs inside ``unit(svc, ctx)``. With ``ctx`` None it opens
its own store transaction (one HTTP request, one unit of work); with a :class:`UnitContext` it joins
the caller's, so a transaction Bundle or a message runs all its entries in ONE store transaction and
GET entries read what the earlier entries wrote. Work that must wait for the commit (reloading
definitions after a conformance resource changed) is queued on ``after_commit`` and dropped on
rollback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.interactions.services import Services
from fhir_exchange.store.port import UnitOfWork


@dataclass(slots=True)
class UnitContext:
    """A unit of work shared by the interactions of one request, and what to run once it commits."""

    uow: UnitOfWork
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@asynccontextmanager
async def unit(svc: Services, ctx: UnitContext | None = None) -> AsyncIterator[UnitContext]:
    """Join ``ctx``, or open a store transaction of our own and run its after-commit work."""
    if ctx is not None:
        yield ctx
        return
    async with svc.store.transaction() as uow:
        own = UnitContext(uow)
        yield own
    for fn in own.after_commit:
        fn()


def notify(svc: Services, ctx: UnitContext, resource: dict[str, Any], *, deleted: bool) -> None:
    """Tell the conformance listeners (definitions, search parameters) about a change, after commit."""
    if not svc.on_conformance_change:
        return

    def run() -> None:
        for hook in svc.on_conformance_change:
            hook(resource, deleted)

    ctx.after_commit.append(run)
