"""Isolation between institutions: what an actor may see, and what it may change.

Every stored resource belongs to the institution that wrote it (``ResourceVersion.owner``). An
institution's clients see what it owns, the network's shared directory (:data:`SHARED_TYPES`: who
is who and where, and the conformance resources everyone validates against) and what a grant gives
it (the consent decision of a consult); they change only what their institution owns. Conformance
resources need an admin client, and AuditEvents are written by the server alone.

:class:`Isolation` is the access policy the repository asks for a :class:`Visibility`, which the
stores compile into every query; :func:`ownership_guard` is the write guard.
"""

from __future__ import annotations

from fhir_exchange.definitions.definitions import CONFORMANCE_TYPES
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.query import Visibility
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.scopes import readable_types
from fhir_exchange.store.port import ResourceVersion

DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "HealthcareService", "Endpoint",
                             "Location", "OrganizationAffiliation"})
SHARED_TYPES = DIRECTORY_TYPES | CONFORMANCE_TYPES
SERVER_WRITTEN = frozenset({"AuditEvent"})


class Isolation:
    """The access policy of a network of institutions."""

    def __init__(self, shared_types: frozenset[str] = SHARED_TYPES) -> None:
        self.shared_types = shared_types

    def visibility(self, actor: Actor, at: str) -> Visibility | None:
        if actor.system:
            return None
        return Visibility(frozenset({actor.institution}) if actor.institution else frozenset(), self.shared_types, at,
                          readable_types(actor.scopes))


def check_write(actor: Actor, type: str, current: ResourceVersion | None, *, visible: bool) -> None:
    """Refuse a write the actor may not make: raises a :class:`FhirError` naming the rule."""
    if actor.system:
        return
    if type in SERVER_WRITTEN:
        raise FhirError(Category.FORBIDDEN, f"{type} resources are written by the server only", code="forbidden")
    if type in CONFORMANCE_TYPES and not actor.admin:
        raise FhirError(Category.FORBIDDEN, f"Writing a {type} (a conformance resource) needs an admin client",
                        code="forbidden")
    if current is None or current.owner == actor.institution:
        return
    if not visible:
        # The actor may not know this resource exists: the id is simply not available to it.
        raise FhirError(Category.CONFLICT, f"The id {type}/{current.id} is not available: choose another id",
                        code="conflict")
    raise FhirError(Category.FORBIDDEN, f"{type}/{current.id} belongs to another institution: an institution "
                    "changes only what it owns", code="forbidden")
