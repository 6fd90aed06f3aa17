"""The isolation guard and the Provenance hook, as hooks of the one write path (they adapt the
decisions of :mod:`fhir_exchange.security` to :class:`~fhir_exchange.interactions.hooks.Change`)."""

from __future__ import annotations

from fhir_exchange.interactions.hooks import Change, WriteUnit
from fhir_exchange.security.access import check_write
from fhir_exchange.security.provenance import provenance
from fhir_exchange.store.port import ResourceVersion


async def isolation_guard(change: Change, unit: WriteUnit) -> None:
    """An institution changes only what it owns; conformance resources need an admin; AuditEvents are
    the server's."""
    current = change.before
    if change.authorized_by is not None and current is not None:
        # Another guard (the consult workflow) vouched for this write to another institution's resource.
        check_write(change.actor, change.type, None, visible=True)
        return
    visible = current is None or await unit.visible(current)
    check_write(change.actor, change.type, current, visible=visible)


async def provenance_hook(change: Change, version: ResourceVersion, unit: WriteUnit) -> None:
    """Every write a client makes gets its Provenance in the same unit of work (the system's own writes,
    and the server without authentication, record none)."""
    if change.actor.system:
        return
    await unit.record("Provenance", provenance(change.actor, version))
