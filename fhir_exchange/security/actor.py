"""The actor: who is asking, carried by every request the router dispatches.

Every request (HTTP, a Bundle entry, a message's entries, a portal page) names an :class:`Actor`;
isolation, the consent decision, workflow guards and audit all read it. The local/system actor
(:data:`SYSTEM`) stands for the server itself and for deployments without authentication: it sees and
may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Actor:
    institution: str | None = None  # Organization id of the institution the caller acts for
    client_id: str | None = None  # the registered system client, or the portal
    scopes: frozenset[str] = field(default_factory=frozenset)  # SMART v2 scopes granted to the token
    practitioner: str | None = None  # "Practitioner/x" or "PractitionerRole/x", when known
    system: bool = False  # the server itself: no isolation, every scope
    admin: bool = False  # may manage conformance resources, institutions and clients

    @property
    def label(self) -> str:
        """How the actor is named in logs and diagnostics (never a token or a patient identifier)."""
        if self.system:
            return "system"
        return self.client_id or (f"Organization/{self.institution}" if self.institution else "anonymous")


SYSTEM = Actor(client_id="local", system=True, admin=True, scopes=frozenset({"system/*.cruds"}))
"""The server itself, and every caller while authentication is off."""
