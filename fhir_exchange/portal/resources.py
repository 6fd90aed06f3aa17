"""The FHIR resources portal pages write, shaped as the consult implementation guide asks
(``profiles/``, ``docs/consult-guide.md``): pure builders, no I/O. Every id is chosen here (a fresh
UUID), so a page can write several resources that point at each other in one transaction Bundle of
``PUT`` entries.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from fhir_exchange.consult.model import ACT_REASON, CONSULT_NOTE, LOINC, PARTICIPATION, RECOMMENDATION_SYSTEM
from fhir_exchange.consult.profiles import CATEGORY_SYSTEM, TASK_CODE_SYSTEM

PROFILE = "http://fhir-exchange.org/fhir/StructureDefinition/"
BUSINESS = "http://fhir-exchange.org/fhir/CodeSystem/consult-business-status"
DEPARTMENTS = "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department"
KCD8 = "http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ROLE_CODES = "http://terminology.hl7.org/CodeSystem/practitioner-role"
PRIORITIES = ("routine", "urgent", "asap", "stat")
RECOMMENDATIONS = ("manage-locally", "transfer-routine", "transfer-urgent", "follow-up-consult")
RECOMMENDATION_DISPLAY = {"manage-locally": "Manage locally", "transfer-routine": "Transfer (routine)",
                          "transfer-urgent": "Transfer (urgent)", "follow-up-consult": "Follow-up consult"}
GENDERS = ("female", "male", "other", "unknown")


def new_id() -> str:
    return str(uuid.uuid4())


def namespace(org: str, what: str) -> str:
    """The identifier system of one institution's portal records (medical record numbers, requests)."""
    return f"urn:fhir-exchange:portal:{org}:{what}"


def practitioner(id: str, org: str, username: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": id, "active": True,
            "identifier": [{"system": namespace(org, "staff"), "value": username}],
            "name": [{"text": name}]}


def practitioner_role(id: str, org: str, practitioner_id: str, department: str | None,
                      department_display: str | None) -> dict[str, Any]:
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole", "id": id, "meta": {"profile": [f"{PROFILE}consult-practitioner-role"]},
        "active": True, "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
        "organization": {"reference": f"Organization/{org}"},
        "code": [{"coding": [{"system": ROLE_CODES, "code": "doctor"}]}]}
    if department:
        coding = {"system": DEPARTMENTS, "code": department}
        if department_display:
            coding["display"] = department_display
        role["specialty"] = [{"coding": [coding]}]
    return role


def patient(id: str, org: str, *, mrn: str, name: str, gender: str, birth_date: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient", "id": id, "meta": {"profile": [f"{PROFILE}consult-patient"]},
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": namespace(org, "mrn"),
                        "value": mrn, "assigner": {"reference": f"Organization/{org}"}}],
        "name": [{"text": name}], "gender": gender}
    if birth_date:
        resource["birthDate"] = birth_date
    return resource


def binary(id: str, content_type: str, data: bytes, patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Binary", "id": id, "contentType": content_type,
            "securityContext": {"reference": f"Patient/{patient_id}"},
            "data": base64.b64encode(data).decode()}


def attachment(binary_id: str, content_type: str, data: bytes, title: str, created: str) -> dict[str, Any]:
    """An Attachment pointing at the Binary holding the file (the consult graph follows ``Binary/`` urls)."""
    return {"contentType": content_type, "url": f"Binary/{binary_id}", "size": len(data),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
            "title": title[:200] or "attachment", "creation": created}


def consent(id: str, org: str, *, patient_id: str, recipient: str, start: str, end: str, signed: str,
            source: dict[str, Any], policy: str, withhold: tuple[str, ...] = ()) -> dict[str, Any]:
    """The patient's consent to disclose to ``recipient`` (an Organization id) for treatment; resources of
    the ``withhold`` types are excepted by a nested deny provision (docs/consult-guide.md)."""
    resource: dict[str, Any] = {
            "resourceType": "Consent", "id": id, "meta": {"profile": [f"{PROFILE}consult-consent"]},
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": signed,
            "performer": [{"reference": f"Patient/{patient_id}"}],
            "organization": [{"reference": f"Organization/{org}"}],
            "sourceAttachment": source, "policy": [{"uri": policy}],
            "provision": {"type": "permit", "period": {"start": start, "end": end},
                          "actor": [{"role": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
                                     "reference": {"reference": f"Organization/{recipient}"}}],
                          "purpose": [{"system": ACT_REASON, "code": "TREAT"}]}}
    if withhold:
        resource["provision"]["provision"] = [{"type": "deny", "class": [
            {"system": "http://hl7.org/fhir/resource-types", "code": t} for t in withhold]}]
    return resource


def supporting_document(id: str, *, patient_id: str, author: str, content: dict[str, Any], now: str) -> dict[str, Any]:
    """A file the requester sends with a consult request (cited by the request's ``supportingInfo``)."""
    return {"resourceType": "DocumentReference", "id": id, "status": "current",
            "type": {"text": "Supporting document"}, "subject": {"reference": f"Patient/{patient_id}"},
            "date": now, "author": [{"reference": author}], "description": content.get("title"),
            "content": [{"attachment": content}]}


def service_request(id: str, org: str, *, patient_id: str, consent_id: str, requester: str, hub: str,
                    department: str, department_display: str, priority: str, reason: str, reason_code: str | None,
                    question: str, documents: list[str], now: str, number: str) -> dict[str, Any]:
    reason_concept: dict[str, Any] = {"text": reason}
    if reason_code:
        reason_concept["coding"] = [{"system": KCD8, "code": reason_code}]
    return {"resourceType": "ServiceRequest", "id": id, "meta": {"profile": [f"{PROFILE}consult-service-request"]},
            "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                            "system": namespace(org, "consult-requests"), "value": number}],
            "status": "active", "intent": "order",
            "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "remote-consultation"}]}],
            "priority": priority,
            "code": {"coding": [{"system": DEPARTMENTS, "code": department, "display": department_display}],
                     "text": department_display},
            "subject": {"reference": f"Patient/{patient_id}"}, "authoredOn": now,
            "requester": {"reference": requester}, "performer": [{"reference": f"Organization/{hub}"}],
            "reasonCode": [reason_concept],
            "note": [{"time": now, "text": question}],  # Annotation.author takes no PractitionerRole
            "supportingInfo": [{"reference": f"Consent/{consent_id}", "type": "Consent"}]
            + [{"reference": f"DocumentReference/{d}", "type": "DocumentReference"} for d in documents]}


def task(id: str, *, request_id: str, patient_id: str, requester: str, owner: str, priority: str, now: str,
         kind: str = "consult", part_of: str | None = None, due: tuple[str, str] | None = None,
         note: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task", "id": id, "meta": {"profile": [f"{PROFILE}consult-task"]},
        "basedOn": [{"reference": f"ServiceRequest/{request_id}"}], "status": "requested", "intent": "order",
        "priority": priority, "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": kind}]},
        "focus": {"reference": f"ServiceRequest/{request_id}"}, "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": now, "lastModified": now, "requester": {"reference": requester},
        "owner": {"reference": owner}}
    if part_of:
        resource["partOf"] = [{"reference": f"Task/{part_of}"}]
    if due:
        resource["restriction"] = {"period": {"start": due[0], "end": due[1]}}
    if note:
        resource["note"] = [{"time": now, "text": note}]
    return resource


def business(code: str) -> dict[str, Any]:
    return {"coding": [{"system": BUSINESS, "code": code}]}


def communication(id: str, *, request_id: str, task_id: str, patient_id: str, sender: str, recipient: str,
                  text: str, now: str, answers: str | None = None) -> dict[str, Any]:
    comm: dict[str, Any] = {
        "resourceType": "Communication", "id": id, "meta": {"profile": [f"{PROFILE}consult-communication"]},
        "basedOn": [{"reference": f"ServiceRequest/{request_id}"}], "partOf": [{"reference": f"Task/{task_id}"}],
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM,
                                   "code": "consult-answer" if answers else "consult-question"}]}],
        "subject": {"reference": f"Patient/{patient_id}"}, "sent": now, "recipient": [{"reference": recipient}],
        "sender": {"reference": sender}, "payload": [{"contentString": text}]}
    if answers:
        comm["inResponseTo"] = [{"reference": f"Communication/{answers}"}]
    return comm


def consult_note(id: str, org: str, *, request_id: str, patient_id: str, author: str, text: str, title: str,
                 recommendation: str, language: str, now: str) -> dict[str, Any]:
    """The consult note, signed by its author (``authenticator``) and final."""
    return {"resourceType": "DocumentReference", "id": id, "meta": {"profile": [f"{PROFILE}consult-note"]},
            "status": "current", "docStatus": "final",
            "type": {"coding": [{"system": LOINC, "code": CONSULT_NOTE, "display": "Consult note"}]},
            "category": [{"coding": [{"system": RECOMMENDATION_SYSTEM, "code": recommendation,
                                      "display": RECOMMENDATION_DISPLAY[recommendation]}]}],
            "subject": {"reference": f"Patient/{patient_id}"}, "date": now, "author": [{"reference": author}],
            "authenticator": {"reference": author}, "custodian": {"reference": f"Organization/{org}"},
            "content": [{"attachment": {"contentType": "text/plain", "language": language,
                                        "title": title, "creation": now,
                                        "data": base64.b64encode(text.encode()).decode()}}],
            "context": {"related": [{"reference": f"ServiceRequest/{request_id}"}]}}


def note_output(note_id: str) -> list[dict[str, Any]]:
    return [{"type": {"coding": [{"system": LOINC, "code": CONSULT_NOTE, "display": "Consult note"}]},
             "valueReference": {"reference": f"DocumentReference/{note_id}"}}]


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource read from the server, ready to be written back (the server owns ``meta``'s version
    and time; the profiles it names are kept)."""
    out = {k: v for k, v in resource.items() if k != "meta"}
    profiles = (resource.get("meta") or {}).get("profile")
    if profiles:
        out["meta"] = {"profile": profiles}
    return out
