"""Which consult profiles a resource must conform to, read from its content.

A general FHIR server requires no profile; a resource that takes part in a consult must conform to
the consult implementation guide (profiles/): a ServiceRequest whose category is the remote
consultation, a Task coded from the consult task codes, a Communication categorised as a consult
question or answer, and a message Bundle carrying a consult event (each event has its own message
profile).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BASE = "http://fhir-exchange.org/fhir"
CATEGORY_SYSTEM = f"{BASE}/CodeSystem/consult-category"
TASK_CODE_SYSTEM = f"{BASE}/CodeSystem/consult-task-code"
EVENT_SYSTEM = f"{BASE}/CodeSystem/consult-event"


def profile(name: str) -> str:
    return f"{BASE}/StructureDefinition/{name}"


EVENT_PROFILES: dict[str, str] = {
    "consult-request": profile("consult-request-message"),
    "consult-status-update": profile("consult-status-update-message"),
    "consult-communication": profile("consult-communication-message"),
    "consult-report": profile("consult-report-message"),
    "consult-cancel": profile("consult-cancel-message"),
}


def _codings(value: Any) -> Iterator[dict[str, Any]]:
    """Codings of a CodeableConcept, a list of them, or a Coding."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            continue
        if "coding" in item:
            yield from (c for c in item["coding"] if isinstance(c, dict)) if isinstance(item["coding"], list) else ()
        elif "system" in item or "code" in item:
            yield item


def has_code(value: Any, system: str, codes: frozenset[str] | None = None) -> bool:
    return any(c.get("system") == system and (codes is None or c.get("code") in codes) for c in _codings(value))


def consult_profiles(resource: dict[str, Any]) -> list[str]:
    rt = resource.get("resourceType")
    if rt == "ServiceRequest" and has_code(resource.get("category"), CATEGORY_SYSTEM,
                                       frozenset({"remote-consultation"})):
        return [profile("consult-service-request")]
    if rt == "Task" and has_code(resource.get("code"), TASK_CODE_SYSTEM):
        return [profile("consult-task")]
    if rt == "Communication" and has_code(resource.get("category"), CATEGORY_SYSTEM,
                                      frozenset({"consult-question", "consult-answer"})):
        return [profile("consult-communication")]
    if rt == "DocumentReference" and has_code(resource.get("type"), "http://loinc.org", frozenset({"11488-4"})) \
            and _related_request(resource):
        return [profile("consult-note")]
    if rt == "Bundle" and resource.get("type") == "transaction":
        entries = resource.get("entry")
        for e in entries if isinstance(entries, list) else []:
            inner = e.get("resource") if isinstance(e, dict) else None
            if isinstance(inner, dict) and inner.get("resourceType") != "Bundle" and consult_profiles(inner):
                return [profile("consult-transaction-bundle")]
        return []
    if rt == "Bundle" and resource.get("type") == "message":
        entries = resource.get("entry")
        first: dict[str, Any] = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], dict) \
            else {}
        header: dict[str, Any] = first["resource"] if isinstance(first.get("resource"), dict) else {}
        event = header.get("eventCoding") if header.get("resourceType") == "MessageHeader" else None
        if isinstance(event, dict) and event.get("system") == EVENT_SYSTEM and event.get("code") in EVENT_PROFILES:
            return [EVENT_PROFILES[event["code"]]]
    return []


def _related_request(resource: dict[str, Any]) -> bool:
    """A note about a ServiceRequest (``context.related``): the consult note of a consult."""
    context = resource.get("context")
    related = context.get("related") if isinstance(context, dict) else None
    return any(isinstance(r, dict) and isinstance(r.get("reference"), str) and "ServiceRequest/" in r["reference"]
               for r in (related if isinstance(related, list) else []))
