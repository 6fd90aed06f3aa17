"""Audit: one AuditEvent per request, IHE Basic Audit Log Patterns style
(https://profiles.ihe.net/ITI/BALP/, https://hl7.org/fhir/R4/auditevent.html).

An :class:`AuditTrail` travels with a request (and the requests derived from it: Bundle and message
entries) and collects, along the one path, what the request did: its interaction, the resources it
read or wrote, the patients they concern, and each access decision with its reason (the repository
records them). At the end the HTTP edge turns the trail into an AuditEvent: who (the client, its
institution, the practitioner when known, the source address), what (the interaction, the entities,
the query), which patient, the outcome, and the decisions.

AuditEvents are written to their own store (:class:`AuditSink`), append-only, so that reads never
become writes of the main unit of work; concurrent requests share one commit (the sink batches what
arrives together, and each request waits for its batch: if the audit record cannot be written, the
request fails closed). An AuditEvent belongs to the institution that made the request and is granted
to the institutions whose resources it accessed, so each institution's auditors read what concerns
them (``AuditEvent?entity=Patient/x``, ``AuditEvent?agent=Organization/y``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.fhir import jsonio
from fhir_exchange.security.actor import Actor
from fhir_exchange.store.port import NEW, Grant, ResourceStore, ResourceVersion

_ACTIONS = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D",
            "search-type": "E", "search-system": "E", "history-instance": "R", "history-type": "E",
            "history-system": "E", "transaction": "E", "batch": "E", "operation": "E", "capabilities": "R"}
_SEARCHES = frozenset({"search-type", "search-system", "history-type", "history-system"})
_PATIENT_FIELDS = ("patient", "subject", "beneficiary", "for")


@dataclass(frozen=True, slots=True)
class Decision:
    target: str  # "Patient/1", or a type for a refused interaction
    permitted: bool
    reason: str  # "owner", "shared directory", "grant", "not visible", "scope", ...
    owner: str | None = None  # the institution the target belongs to


@dataclass(slots=True)
class AuditTrail:
    """What one request did, collected on its way (shared by the requests derived from it)."""

    interaction: str | None = None
    type: str | None = None
    id: str | None = None
    entities: dict[str, str] = field(default_factory=dict)  # reference -> action (C R U D)
    patients: set[str] = field(default_factory=set)
    decisions: list[Decision] = field(default_factory=list)
    owners: set[str] = field(default_factory=set)  # institutions whose resources were touched

    def route(self, interaction: str, type: str | None, id: str | None) -> None:
        """The interaction of the request (the first route taken; Bundle entries add entities)."""
        if self.interaction is None:
            self.interaction, self.type, self.id = interaction, type, id

    def decide(self, decision: Decision) -> None:
        if len(self.decisions) < 200:  # a search over thousands records its first decisions only
            self.decisions.append(decision)
        if decision.permitted and decision.owner:
            self.owners.add(decision.owner)

    def touched(self, v: ResourceVersion, action: str, resource: dict[str, Any] | None = None) -> None:
        if len(self.entities) >= 200:
            return
        self.entities[f"{v.type}/{v.id}/_history/{v.version_id}"] = action
        if v.owner:
            self.owners.add(v.owner)
        if v.type == "Patient":
            self.patients.add(f"Patient/{v.id}")
        elif resource is not None or (v.body and not v.deleted):
            doc = resource if resource is not None else jsonio.loads(v.body)
            self.patients.update(patient_references(doc))


def patient_references(resource: dict[str, Any]) -> set[str]:
    """The patients a resource is about, from its usual patient elements."""
    out: set[str] = set()
    for name in _PATIENT_FIELDS:
        value = resource.get(name)
        for item in value if isinstance(value, list) else [value]:
            ref = item.get("reference") if isinstance(item, dict) else None
            if isinstance(ref, str) and ref.startswith("Patient/"):
                out.add("/".join(ref.split("/")[:2]))
    return out


_AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
CLIENT_SYSTEM = "urn:fhir-exchange:client"


def audit_event(*, actor: Actor, trail: AuditTrail, method: str, path: str, query: str, status: int,
                diagnostics: str, address: str | None, recorded: str, server: str) -> dict[str, Any]:
    """The AuditEvent of one request."""
    interaction = trail.interaction or ("operation" if "$" in path else "unknown")
    outcome = "0" if status < 400 else ("4" if status < 500 else "8")
    client_agent: dict[str, Any] = {
        "type": {"coding": [{"system": _DICOM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": actor.client_id or "anonymous"}},
        "requestor": True,
    }
    if actor.institution:
        client_agent["who"]["display"] = f"client of Organization/{actor.institution}"
    if address:
        client_agent["network"] = {"address": address, "type": "2"}
    agents: list[dict[str, Any]] = [client_agent]
    if actor.institution:
        agents.append({"who": {"reference": f"Organization/{actor.institution}"}, "requestor": False,
                       "role": [{"text": "institution of the requesting client"}]})
    if actor.practitioner:
        agents.append({"who": {"reference": actor.practitioner}, "requestor": True})
    agents.append({"type": {"coding": [{"system": _DICOM, "code": "110152", "display": "Destination Role ID"}]},
                   "who": {"display": "fhir-exchange"}, "requestor": False,
                   "network": {"address": server, "type": "5"}})
    entities: list[dict[str, Any]] = []
    for patient in sorted(trail.patients):
        entities.append({"what": {"reference": patient},
                         "type": {"system": _OBJECT_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": _ROLE, "code": "1", "display": "Patient"}})
    for ref in trail.entities:
        entities.append({"what": {"reference": ref},
                         "type": {"system": _OBJECT_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": _ROLE, "code": "4", "display": "Domain Resource"}})
    if interaction in _SEARCHES or (query and not trail.entities):
        entities.append({"type": {"system": _OBJECT_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": _ROLE, "code": "24", "display": "Query"},
                         "query": base64.b64encode(f"{method} {path}?{query}".encode()).decode()})
    decisions = trail.decisions[:50]
    if decisions:
        entities.append({"what": {"display": "access decisions"},
                         "detail": [{"type": ("permit " if d.permitted else "deny ") + d.target,
                                     "valueString": d.reason} for d in decisions]})
    summary = "; ".join(("permit" if d.permitted else "deny") + f" {d.target}: {d.reason}" for d in decisions[:5])
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": _AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": _INTERACTION, "code": interaction}],
        "action": _ACTIONS.get(interaction, "E"),
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": f"{status} {diagnostics}".strip() + (f" ({summary})" if summary else ""),
        "agent": agents,
        "source": {"observer": {"display": "fhir-exchange"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
    }
    if entities:
        event["entity"] = entities
    return event


@dataclass(slots=True)
class _Pending:
    event: dict[str, Any]
    owner: str | None
    grantees: frozenset[str]
    done: asyncio.Future[None]


class AuditSink:
    """Writes AuditEvents to their own store, append-only, sharing one commit among the requests that
    arrive together (group commit); each caller returns once its event is durable, or raises."""

    def __init__(self, store: ResourceStore, new_id: Callable[[], str]) -> None:
        self.store = store
        self.new_id = new_id
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, event: dict[str, Any], owner: str | None, grantees: frozenset[str]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(event, owner, grantees, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.store.transaction() as uow:
                    for item in batch:
                        id = self.new_id()
                        recorded = str(item.event.get("recorded"))
                        doc = {"resourceType": "AuditEvent", "id": id,
                               "meta": {"versionId": "1", "lastUpdated": recorded},
                               **{k: v for k, v in item.event.items() if k != "resourceType"}}
                        v = ResourceVersion("AuditEvent", id, 1, recorded, False, jsonio.dumps(doc), "POST",
                                            item.owner)
                        await uow.put(v, doc, expected_version=NEW)
                        grants = [Grant(g, "AuditEvent", id) for g in sorted(item.grantees) if g != item.owner]
                        if grants:
                            await uow.replace_grants(f"audit:{id}", grants)
            except BaseException as exc:  # every waiter of the batch fails closed
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for item in batch:
                if not item.done.done():
                    item.done.set_result(None)
