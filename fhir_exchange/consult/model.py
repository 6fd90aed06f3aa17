"""The consult as data: which resources take part in one, how they point at each other, and which
institution plays which part. Pure functions over resources; reading the store is the caller's.

A consult is one ServiceRequest (category remote-consultation, written by the requester's
institution) with its Task (code consult: focus the ServiceRequest, owned by the consultant), the
Consent(s) its ``supportingInfo`` cites, its Communications (``basedOn`` the ServiceRequest) and its
consult note (a DocumentReference of type LOINC 11488-4 whose ``context.related`` is the
ServiceRequest). A follow-up is a Task with code follow-up, ``partOf`` the first consult's Task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fhir_exchange.consult.profiles import CATEGORY_SYSTEM, TASK_CODE_SYSTEM, has_code

LOINC = "http://loinc.org"
CONSULT_NOTE = "11488-4"
RECOMMENDATION_SYSTEM = "http://fhir-exchange.org/fhir/CodeSystem/consult-recommendation"
BUSINESS_STATUS_SYSTEM = "http://fhir-exchange.org/fhir/CodeSystem/consult-business-status"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"

LIVE_TASK = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold", "completed"})
OPEN_TASK = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})


def is_request(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "ServiceRequest" and has_code(
        resource.get("category"), CATEGORY_SYSTEM, frozenset({"remote-consultation"}))


def is_task(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Task" and has_code(resource.get("code"), TASK_CODE_SYSTEM)


def task_kind(resource: dict[str, Any]) -> str | None:
    """``consult`` or ``follow-up`` (the consult task codes), None for another Task."""
    for coding in codings(resource.get("code")):
        if coding.get("system") == TASK_CODE_SYSTEM and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def is_communication(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Communication" and has_code(
        resource.get("category"), CATEGORY_SYSTEM, frozenset({"consult-question", "consult-answer"}))


def is_answer(resource: dict[str, Any]) -> bool:
    return has_code(resource.get("category"), CATEGORY_SYSTEM, frozenset({"consult-answer"}))


def is_note(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "DocumentReference" and has_code(
        resource.get("type"), LOINC, frozenset({CONSULT_NOTE}))


def codings(value: Any) -> Iterator[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict):
            codings = item.get("coding")
            if isinstance(codings, list):
                yield from (c for c in codings if isinstance(c, dict))
            elif "system" in item or "code" in item:
                yield item


def reference(value: Any) -> str | None:
    """``Type/id`` of a Reference (a literal relative reference; versions and absolute URLs cut)."""
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str) or "/" not in ref:
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return f"{parts[-2]}/{parts[-1]}" if len(parts) >= 2 else None


def references(values: Any) -> list[str]:
    items = values if isinstance(values, list) else [values]
    return [r for r in (reference(v) for v in items) if r]


def id_of(ref: str | None, type: str) -> str | None:
    if ref and ref.startswith(type + "/"):
        return ref.split("/", 1)[1]
    return None


def request_of(resource: dict[str, Any]) -> str | None:
    """The ServiceRequest id a consult resource belongs to."""
    rt = resource.get("resourceType")
    if rt == "ServiceRequest":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    if rt == "Task":
        return id_of(reference(resource.get("focus")), "ServiceRequest") or next(
            (i for i in (id_of(r, "ServiceRequest") for r in references(resource.get("basedOn"))) if i), None)
    if rt == "Communication":
        return next((i for i in (id_of(r, "ServiceRequest") for r in references(resource.get("basedOn"))) if i), None)
    if rt == "DocumentReference":
        context = resource.get("context")
        related = context.get("related") if isinstance(context, dict) else None
        return next((i for i in (id_of(r, "ServiceRequest") for r in references(related)) if i), None)
    return None


def consents_of(sr: dict[str, Any]) -> list[str]:
    return [i for i in (id_of(r, "Consent") for r in references(sr.get("supportingInfo"))) if i]


def status_code(resource: dict[str, Any] | None) -> str | None:
    status = resource.get("status") if resource else None
    return status if isinstance(status, str) else None


def business_status(task: dict[str, Any] | None) -> str | None:
    for coding in codings((task or {}).get("businessStatus")):
        if coding.get("system") == BUSINESS_STATUS_SYSTEM and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def recommendation(note: dict[str, Any]) -> str | None:
    """The coded recommendation of a consult note (its category from the recommendation CodeSystem)."""
    for coding in codings(note.get("category")):
        if coding.get("system") == RECOMMENDATION_SYSTEM and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def consent_recipients(consent: dict[str, Any]) -> list[str]:
    """The references of the permit provision's actors with role IRCP (the recipients)."""
    provision = consent.get("provision")
    actors = provision.get("actor") if isinstance(provision, dict) else None
    out = []
    for actor in actors if isinstance(actors, list) else []:
        if isinstance(actor, dict) and any(c.get("system") == PARTICIPATION and c.get("code") == "IRCP"
                                           for c in codings(actor.get("role"))):
            ref = reference(actor.get("reference"))
            if ref:
                out.append(ref)
    return out


def consent_purposes(consent: dict[str, Any]) -> set[str]:
    provision = consent.get("provision")
    purposes = provision.get("purpose") if isinstance(provision, dict) else None
    return {str(c.get("code")) for c in (purposes if isinstance(purposes, list) else [])
            if isinstance(c, dict) and c.get("system") == ACT_REASON}


def period(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, dict):
        return None, None
    start, end = value.get("start"), value.get("end")
    return (start if isinstance(start, str) else None), (end if isinstance(end, str) else None)


def deny_provisions(consent: dict[str, Any]) -> list[dict[str, Any]]:
    provision = consent.get("provision")
    nested = provision.get("provision") if isinstance(provision, dict) else None
    return [p for p in (nested if isinstance(nested, list) else []) if isinstance(p, dict) and p.get("type") == "deny"]


def deny_classes(deny: dict[str, Any]) -> set[str]:
    return {str(c.get("code")) for c in deny.get("class") or [] if isinstance(c, dict)
            and c.get("system") == RESOURCE_TYPES and c.get("code")}


def deny_labels(deny: dict[str, Any]) -> set[tuple[str, str]]:
    return {(str(c.get("system")), str(c.get("code"))) for c in deny.get("securityLabel") or []
            if isinstance(c, dict) and c.get("code")}


def security_labels(resource: dict[str, Any]) -> set[tuple[str, str]]:
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    return {(str(c.get("system")), str(c.get("code"))) for c in labels if isinstance(c, dict)} \
        if isinstance(labels, list) else set()


def outgoing(resource: dict[str, Any]) -> list[str]:
    """Every literal relative reference in a resource (``Type/id``), for the consult graph."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "reference" and isinstance(v, str):
                    ref = reference(node)
                    if ref and not ref.startswith("#"):
                        out.append(ref)
                elif k == "url" and isinstance(v, str) and v.startswith("Binary/"):
                    out.append(v.split("/_history/")[0])
                else:
                    walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in resource.items() if k not in ("contained", "meta", "text")})
    return list(dict.fromkeys(out))
