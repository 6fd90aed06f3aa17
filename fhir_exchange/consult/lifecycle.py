"""The consult's lifecycle: which status changes are legal, and which party may make them. Pure.

ServiceRequest (written by the requester): draft → active → completed | revoked; a draft may be
revoked; any status may become entered-in-error.

Task (workflow-management.html, option H: the exchange is the broker):

    requested ─▶ received ─▶ accepted ─▶ in-progress ⇄ on-hold ─▶ completed
        │           │           │             │
        └───────────┴─▶ rejected (consultant, statusReason)
        └───────────┴───────────┴─▶ cancelled (requester, statusReason; before in-progress)
                                               └─▶ failed (consultant, statusReason; after it started)

The consultant's institution moves the Task; the requester's may cancel it before work starts,
and otherwise changes only ``owner`` (before acceptance), ``businessStatus`` (information-provided,
abort-requested) and ``input``. ``awaiting-information`` (the consultant asks) is a businessStatus of
a received or in-progress Task. A follow-up Task has the same lifecycle.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.consult import model

ERROR = "entered-in-error"

REQUEST_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"draft", "active"}),
    "draft": frozenset({"draft", "active", "revoked"}),
    "active": frozenset({"active", "completed", "revoked"}),
    "completed": frozenset({"completed"}),
    "revoked": frozenset({"revoked"}),
    ERROR: frozenset(),
}

TASK_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"draft", "requested"}),
    "draft": frozenset({"draft", "requested", "cancelled"}),
    "requested": frozenset({"requested", "received", "accepted", "rejected", "cancelled"}),
    "received": frozenset({"received", "accepted", "rejected", "cancelled"}),
    "accepted": frozenset({"accepted", "in-progress", "cancelled", "failed"}),
    "in-progress": frozenset({"in-progress", "on-hold", "completed", "failed"}),
    "on-hold": frozenset({"on-hold", "in-progress", "failed"}),
    "completed": frozenset({"completed"}),
    "rejected": frozenset({"rejected"}),
    "cancelled": frozenset({"cancelled"}),
    "failed": frozenset({"failed"}),
    ERROR: frozenset(),
}

# Which party sets a Task status (a status left as it is needs nobody's right).
REQUESTER_SETS = frozenset({"draft", "requested", "cancelled", ERROR})
CONSULTANT_SETS = frozenset({"received", "accepted", "rejected", "in-progress", "on-hold", "completed", "failed",
                             ERROR})

# What the requester may change on its consult's Task; the rest is the consultant's (but never these).
REQUESTER_TASK_FIELDS = frozenset({"status", "statusReason", "owner", "businessStatus", "input", "restriction",
                                   "lastModified",
                                   "note", "meta", "text"})
FIXED_TASK_FIELDS = frozenset({"basedOn", "focus", "for", "requester", "intent", "code", "authoredOn",
                               "partOf", "instantiatesCanonical", "instantiatesUri"})
REQUESTER_BUSINESS = frozenset({"information-provided", "abort-requested"})


def legal(transitions: dict[str | None, frozenset[str]], before: str | None, after: str | None) -> bool:
    if after == ERROR:
        return True
    return after in transitions.get(before, frozenset())


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> set[str]:
    """The top-level elements whose value differs (meta aside). References are compared by what they name
    (``Type/id``, as every consult rule reads them): a message names the Task's request by its full URL
    where the stored Task has the relative reference, and that changes nothing."""
    before = before or {}
    keys = (set(before) | set(after)) - {"meta", "id", "resourceType"}
    return {k for k in keys if _named(before.get(k)) != _named(after.get(k))}


def _named(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (model.reference(value) or v) if k == "reference" and isinstance(v, str) else _named(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v) for v in value]
    return value
