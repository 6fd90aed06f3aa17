"""Provenance of every write made by a client (https://hl7.org/fhir/R4/provenance.html): which version,
when, what was done, and who did it (the client, on behalf of its institution; the practitioner when
known). It is written in the same unit of work as the write it describes, so both commit or neither."""

from __future__ import annotations

from typing import Any

from fhir_exchange.security.actor import Actor
from fhir_exchange.security.audit import CLIENT_SYSTEM
from fhir_exchange.store.port import ResourceVersion

_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_ACTIVITY = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE", "DELETE": "DELETE"}


def provenance(actor: Actor, target: ResourceVersion) -> dict[str, Any]:
    on_behalf = {"onBehalfOf": {"reference": f"Organization/{actor.institution}"}} if actor.institution else {}
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": _PARTICIPANT, "code": "performer", "display": "Performer"}]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": actor.client_id or "anonymous"},
                "display": "system client"},
        **on_behalf,
    }]
    if actor.practitioner:
        agents.insert(0, {"type": {"coding": [{"system": _PARTICIPANT, "code": "author", "display": "Author"}]},
                          "who": {"reference": actor.practitioner}, **on_behalf})
    activity = _ACTIVITY.get(target.method, "UPDATE")
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{target.type}/{target.id}/_history/{target.version_id}"}],
        "recorded": target.last_updated,
        "activity": {"coding": [{"system": _OPERATION, "code": activity}]},
        "agent": agents,
    }


def server_provenance(target: ResourceVersion, reason: str, because: str) -> dict[str, Any]:
    """The Provenance of a change the server makes on its own account (a withdrawn consent cancels its
    consults): the agent is the exchange, the reason says why, ``entity`` what caused it."""
    activity = _ACTIVITY.get(target.method, "UPDATE")
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{target.type}/{target.id}/_history/{target.version_id}"}],
        "recorded": target.last_updated,
        "activity": {"coding": [{"system": _OPERATION, "code": activity}], "text": reason},
        "reason": [{"text": reason}],
        "agent": [{"type": {"coding": [{"system": _PARTICIPANT, "code": "assembler", "display": "Assembler"}]},
                   "who": {"display": "fhir-exchange (the server)"}}],
        "entity": [{"role": "source", "what": {"reference": because}}],
    }
