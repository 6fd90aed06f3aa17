"""The AuditEvent of one delivery attempt (a notification, a handshake or heartbeat, a forwarded message):
DICOM "Export" (110106), the subscriber's institution as the party the data went to, the resource
sent as the entity, the receiver's answer as the outcome. It belongs to the subscriber's institution and
is granted to the owner of what was sent, like the AuditEvents of requests (security/audit.py).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.security.audit import AuditSink

_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
CHANNEL_SUBTYPE = "http://terminology.hl7.org/CodeSystem/subscription-channel-type"


def delivery_event(*, what: str, subscriber: str | None, channel: str, url: str, status: int, ok: bool,
                   error: str, recorded: str, entity: str | None, subject: str | None) -> dict[str, Any]:
    """``what``: "Subscription/x" or "MessageHeader/y"; ``entity``: the reference sent, if any."""
    agents: list[dict[str, Any]] = [
        {"type": {"coding": [{"system": _DICOM, "code": "110153", "display": "Source Role ID"}]},
         "who": {"display": "fhir-exchange notifier"}, "requestor": True},
        {"type": {"coding": [{"system": _DICOM, "code": "110152", "display": "Destination Role ID"}]},
         "who": {"reference": f"Organization/{subscriber}"} if subscriber else {"display": "subscriber"},
         "requestor": False, "network": {"address": url[:1024], "type": "5"}},
    ]
    entities: list[dict[str, Any]] = [{"what": {"reference": what},
                                       "type": {"system": _OBJECT_TYPE, "code": "2", "display": "System Object"},
                                       "role": {"system": _ROLE, "code": "13", "display": "Security Resource"}}]
    if entity:
        entities.append({"what": {"reference": entity},
                         "type": {"system": _OBJECT_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": _ROLE, "code": "4", "display": "Domain Resource"}})
    if subject:
        entities.append({"what": {"reference": subject},
                         "type": {"system": _OBJECT_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": _ROLE, "code": "1", "display": "Patient"}})
    return {
        "resourceType": "AuditEvent",
        "type": {"system": _DICOM, "code": "110106", "display": "Export"},
        "subtype": [{"system": CHANNEL_SUBTYPE, "code": channel}],
        "action": "E", "recorded": recorded, "outcome": "0" if ok else "4",
        "outcomeDesc": (f"{status} " if status else "") + (error or "delivered"),
        "agent": agents,
        "source": {"observer": {"display": "fhir-exchange"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": entities,
    }


async def record(sink: AuditSink | None, event: dict[str, Any], subscriber: str | None, owners: set[str]) -> None:
    if sink is not None:
        await sink.record(event, subscriber, frozenset(o for o in owners if o))
