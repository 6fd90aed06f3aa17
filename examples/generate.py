"""Write the consult IG's examples: valid resources, invalid ones (each breaking one rule) and Bundles.

    .venv/bin/python examples/generate.py

Outputs examples/valid/*.json, examples/invalid/*.json with examples/invalid/manifest.json (file →
the rule it breaks) and examples/bundles/*.json (every consult exchange as a transaction Bundle for
REST and a message Bundle per event). The JSON is committed; edit this script, not the output.

Manifest fields: ``rule`` is the constraint key (``cx-*`` ours, ``inv-1``/``bdl-*`` core) or the
validator's message id for structural rules (``sd-cardinality-min``, ``sd-fixed-mismatch``,
``sd-pattern-mismatch``, ``sd-type-not-allowed``, ``tx-code-not-in-valueset``); ``element`` the
element id a structural rule concerns; ``also`` further ids the same defect necessarily raises;
``profile`` the profile the example claims; ``needs`` the validator features that must exist for
the rule to be caught (tests/conformance/test_consult_ig.py marks the case xfail while one is missing).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Json = dict[str, Any]
HERE = Path(__file__).resolve().parent
CANON = "http://fhir-exchange.org/fhir"
SD = f"{CANON}/StructureDefinition/"
CS = f"{CANON}/CodeSystem/"
EXCHANGE = "https://exchange.fhir-exchange.org/fhir"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
HIRA = "http://www.hl7korea.or.kr/Identifier/hira-krnpi"
MOHW = "http://www.hl7korea.or.kr/Identifier/mohw-md-license-id"
KCD8 = "http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8"
LOINC = "http://loinc.org"
STYLE_EXT = f"{SD}consult-connection-style"

# Validator features an expected failure depends on (named in the xfail reasons of the test).
PROFILES = "profile-validation"  # validating against meta.profile: snapshots generated from differentials
INVARIANTS = "invariants"  # constraint.expression evaluated with FHIRPath
SLICING = "slicing"
BINDINGS = "profile-bindings"
RESOLVE = "resolve-in-bundle"


def meta(profile: str) -> Json:
    return {"profile": [SD + profile]}


# -- parties ------------------------------------------------------------------------------------


def organization(oid: str, name: str, hira: str, org_type: str, display: str, endpoint: str) -> Json:
    return {
        "resourceType": "Organization", "id": oid, "meta": meta("consult-organization"),
        "identifier": [{"system": HIRA, "value": hira}],
        "active": True,
        "type": [{"coding": [{"system": "http://www.hl7korea.or.kr/CodeSystem/hira-healthcare-organization-types",
                              "code": org_type, "display": display}]}],
        "name": name,
        "endpoint": [{"reference": endpoint}],
    }


def endpoint(eid: str, style: str, conn: str, address: str, org: str) -> Json:
    return {
        "resourceType": "Endpoint", "id": eid, "meta": meta("consult-endpoint"),
        "extension": [{"url": STYLE_EXT, "valueCode": style}],
        "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": conn},
        "managingOrganization": {"reference": org},
        "payloadType": [{"coding": [{"system": "http://hl7.org/fhir/resource-types", "code": "ServiceRequest"}]}],
        "payloadMimeType": ["application/fhir+json"],
        "address": address,
    }


def practitioner(pid: str, name: str, licence: str) -> Json:
    return {
        "resourceType": "Practitioner", "id": pid, "meta": meta("consult-practitioner"),
        "identifier": [{"system": f"{EXCHANGE}/NamingSystem/staff", "value": pid}],
        "name": [{"text": name}],
        "qualification": [{
            "identifier": [{"system": MOHW, "value": licence}],
            "code": {"coding": [{"system": "http://www.hl7korea.or.kr/CodeSystem/mohw-practitioner-qualification-types",
                                 "code": "01", "display": "의사"}]},
        }],
    }


def practitioner_role(rid: str, prac: str, org: str, dept: str, dept_display: str) -> Json:
    return {
        "resourceType": "PractitionerRole", "id": rid, "meta": meta("consult-practitioner-role"),
        "active": True,
        "practitioner": {"reference": prac},
        "organization": {"reference": org},
        "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor"}]}],
        "specialty": [{"coding": [{"system": "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department",
                                   "code": dept, "display": dept_display}]}],
    }


def patient(mrn_assigner: str) -> Json:
    return {
        "resourceType": "Patient", "id": "pat", "meta": meta("consult-patient"),
        "identifier": [{
            "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
            "system": "http://hospital-a.example.kr/mrn", "value": "A-000123",
            "assigner": {"reference": mrn_assigner},
        }],
        "name": [{"text": "김민수"}],
        "gender": "male",
        "birthDate": "1948-03-02",
    }


# -- consult resources ----------------------------------------------------------------------------


def consent(r: dict[str, str]) -> Json:
    return {
        "resourceType": "Consent", "id": "consent", "meta": meta("consult-consent"),
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": r["pat"]},
        "dateTime": "2025-03-03T09:00:00+09:00",
        "performer": [{"reference": r["pat"]}],
        "organization": [{"reference": r["req_org"]}],
        "sourceAttachment": {"contentType": "application/pdf", "url": "https://hospital-a.example.kr/consents/123.pdf",
                             "title": "원격협진 동의서"},
        "policy": [{"uri": "https://hospital-a.example.kr/policies/remote-consultation"}],
        "provision": {
            "type": "permit",
            "period": {"start": "2025-03-03", "end": "2035-03-03"},  # ten years: the examples stay valid
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "IRCP"}]},
                       "reference": {"reference": r["cons_org"]}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
        },
    }


def service_request(r: dict[str, str]) -> Json:
    return {
        "resourceType": "ServiceRequest", "id": "sr", "meta": meta("consult-service-request"),
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                        "system": "http://hospital-a.example.kr/consult-requests", "value": "CR-2025-0042"}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": CS + "consult-category", "code": "remote-consultation"}]}],
        "priority": "routine",
        "code": {"coding": [{"system": "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department",
                             "code": "02", "display": "신경과"}], "text": "신경과 원격협진"},
        "subject": {"reference": r["pat"]},
        "authoredOn": "2025-03-03T09:30:00+09:00",
        "requester": {"reference": r["req_role"]},
        "performer": [{"reference": r["cons_org"]}],
        "reasonCode": [{"coding": [{"system": KCD8, "code": "I63.9", "display": "상세불명의 뇌경색증"}],
                        "text": "뇌경색 후 재활 중 인지 저하"}],
        "supportingInfo": [{"reference": r["consent"], "type": "Consent"}],
    }


def task(r: dict[str, str], status: str = "requested", business: str | None = None) -> Json:
    t: Json = {
        "resourceType": "Task", "id": "task", "meta": meta("consult-task"),
        "basedOn": [{"reference": r["sr"]}],
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": CS + "consult-task-code", "code": "consult"}]},
        "focus": {"reference": r["sr"]},
        "for": {"reference": r["pat"]},
        "authoredOn": "2025-03-03T09:30:00+09:00",
        "lastModified": "2025-03-03T09:30:00+09:00",
        "requester": {"reference": r["req_role"]},
        "owner": {"reference": r["cons_org"]},
    }
    if business:
        t["businessStatus"] = {"coding": [{"system": CS + "consult-business-status", "code": business}]}
    return t


def completed_task(r: dict[str, str]) -> Json:
    t = task(r, "completed", "report-available")
    t["lastModified"] = "2025-03-05T16:00:00+09:00"
    t["owner"] = {"reference": r["cons_role"]}
    t["output"] = [{"type": {"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}]},
                    "valueReference": {"reference": r["note"]}}]
    return t


def follow_up_task(r: dict[str, str]) -> Json:
    """The follow-up the consult note recommends, after the patient's discharge: a Task with code follow-up,
    partOf the first consult's Task, on the same ServiceRequest, due by restriction.period.end."""
    t = task(r)
    t.update({
        "id": "follow-up",
        "partOf": [{"reference": r["task"]}],
        "code": {"coding": [{"system": CS + "consult-task-code", "code": "follow-up"}]},
        "authoredOn": "2025-04-01T09:00:00+09:00",
        "lastModified": "2025-04-01T09:00:00+09:00",
        "restriction": {"period": {"start": "2025-04-01", "end": "2025-04-15"}},
        "owner": {"reference": r["cons_role"]},
    })
    # Keep the element order of a Task (partOf after basedOn, restriction after owner) for readability.
    order = ["resourceType", "id", "meta", "basedOn", "partOf", "status", "businessStatus", "intent", "code",
             "focus", "for", "authoredOn", "lastModified", "requester", "owner", "restriction"]
    return {k: t[k] for k in order if k in t}


def network(r: dict[str, str]) -> Json:
    """The partner (the requester) is affiliated with the hub (the consultant) for neurology and neurosurgery."""
    dept = "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department"
    return {
        "resourceType": "OrganizationAffiliation", "id": "network-b-a", "meta": meta("consult-network"),
        "active": True,
        "period": {"start": "2025-01-01"},
        "organization": {"reference": r["cons_org"]},
        "participatingOrganization": {"reference": r["req_org"]},
        "specialty": [{"coding": [{"system": dept, "code": "02", "display": "신경과"}]},
                      {"coding": [{"system": dept, "code": "06", "display": "신경외과"}]}],
    }


def communication(r: dict[str, str], answer: bool = False) -> Json:
    c: Json = {
        "resourceType": "Communication", "id": "answer" if answer else "question",
        "meta": meta("consult-communication"),
        "basedOn": [{"reference": r["sr"]}],
        "partOf": [{"reference": r["task"]}],
        "status": "completed",
        "category": [{"coding": [{"system": CS + "consult-category",
                                  "code": "consult-answer" if answer else "consult-question"}]}],
        "subject": {"reference": r["pat"]},
        "sent": "2025-03-04T11:00:00+09:00" if answer else "2025-03-04T10:00:00+09:00",
        "recipient": [{"reference": r["cons_role"] if answer else r["req_role"]}],
        "sender": {"reference": r["req_role"] if answer else r["cons_role"]},
        "payload": [{"contentString": "최근 뇌 MRI 결과를 보내드립니다." if answer
                     else "최근 뇌 MRI 결과를 공유해 주실 수 있습니까?"}],
    }
    if answer:
        c["inResponseTo"] = [{"reference": r["question"]}]
    return c


def consult_note(r: dict[str, str]) -> Json:
    return {
        "resourceType": "DocumentReference", "id": "note", "meta": meta("consult-note"),
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}]},
        "category": [{"coding": [{"system": CS + "consult-recommendation", "code": "follow-up-consult",
                                  "display": "Follow-up consult"}]}],
        "subject": {"reference": r["pat"]},
        "date": "2025-03-05T15:50:00+09:00",
        "author": [{"reference": r["cons_role"]}],
        "custodian": {"reference": r["cons_org"]},
        "content": [{"attachment": {"contentType": "text/plain", "language": "ko",
                                    "data": "7Iug6rK96rO8IOybkOqyqe2YkeynhCDshozqsqw=",
                                    "title": "신경과 원격협진 소견서"}}],
        "context": {"related": [{"reference": r["sr"]}]},
    }


def message_header(r: dict[str, str], event: str, focus: list[str]) -> Json:
    return {
        "resourceType": "MessageHeader", "id": "header", "meta": meta("consult-message-header"),
        "eventCoding": {"system": CS + "consult-event", "code": event},
        "destination": [{"endpoint": f"{EXCHANGE}/$process-message", "receiver": {"reference": r["cons_org"]}}],
        "sender": {"reference": r["req_org"]},
        "source": {"endpoint": "https://hie.region.example.kr/fhir"},
        "focus": [{"reference": f} for f in focus],
    }


# -- references -----------------------------------------------------------------------------------

NAMES = {
    "pat": "Patient/pat", "consent": "Consent/consent", "sr": "ServiceRequest/sr", "task": "Task/task",
    "req_org": "Organization/hospital-a", "cons_org": "Organization/hospital-b",
    "req_role": "PractitionerRole/req-role", "cons_role": "PractitionerRole/cons-role",
    "req_doc": "Practitioner/req-doc", "cons_doc": "Practitioner/cons-doc",
    "req_ep": "Endpoint/hospital-a-emr", "cons_ep": "Endpoint/hospital-b-hie",
    "note": "DocumentReference/note", "question": "Communication/question", "answer": "Communication/answer",
    "header": "MessageHeader/header", "follow_up": "Task/follow-up",
}
REL = dict(NAMES)  # standalone examples: relative references
# In Bundles, new resources get urn:uuid fullUrls; resources the exchange already holds (the parties,
# and a consult created by an earlier exchange) are absolute URLs on the exchange (cx-bdl-1; a relative
# Type/id, a resource the receiving server holds, is allowed too).
UUID = {k: f"urn:uuid:00000000-0000-4000-8000-{i:012d}" for i, k in enumerate(NAMES, start=1)}
ABS = {k: f"{EXCHANGE}/{v}" for k, v in NAMES.items()}


def parties(r: dict[str, str]) -> dict[str, Json]:
    return {
        "req_org": organization("hospital-a", "가나요양병원", "12345678", "28", "요양병원", r["req_ep"]),
        "cons_org": organization("hospital-b", "다라대학교병원", "87654321", "01", "상급종합병원", r["cons_ep"]),
        "req_ep": endpoint("hospital-a-emr", "vpn-emr", "hl7-fhir-rest", "https://emr.hospital-a.example.kr/fhir",
                           r["req_org"]),
        "cons_ep": endpoint("hospital-b-hie", "exchange-system", "hl7-fhir-msg",
                            "https://hie.hospital-b.example.kr/$process-message", r["cons_org"]),
        "req_doc": practitioner("req-doc", "이영희", "102938"),
        "cons_doc": practitioner("cons-doc", "박철수", "564738"),
        "req_role": practitioner_role("req-role", r["req_doc"], r["req_org"], "21", "재활의학과"),
        "cons_role": practitioner_role("cons-role", r["cons_doc"], r["cons_org"], "02", "신경과"),
    }


def overdue_follow_up(r: dict[str, str]) -> Json:
    """The follow-up past its due date, as the server's sweep leaves it."""
    t = follow_up_task(r)
    t["id"] = "follow-up-overdue"
    t["status"] = "accepted"
    t["businessStatus"] = {"coding": [{"system": CS + "consult-business-status", "code": "overdue"}], "text": "overdue"}
    return {k: t[k] for k in ("resourceType", "id", "meta", "basedOn", "partOf", "status", "businessStatus", *t)}


def valid_resources() -> dict[str, Json]:
    r = REL
    p = parties(r)
    portal = endpoint("hospital-c-portal", "portal", "hl7-fhir-rest", f"{EXCHANGE}/portal/hospital-c", r["req_org"])
    return {
        "Patient-consult-patient": patient(r["req_org"]),
        "Organization-requester": p["req_org"],
        "Organization-consultant": p["cons_org"],
        "Endpoint-vpn-emr": p["req_ep"],
        "Endpoint-exchange-system": p["cons_ep"],
        "Endpoint-portal": portal,
        "Practitioner-requester": p["req_doc"],
        "PractitionerRole-requester": p["req_role"],
        "PractitionerRole-consultant": p["cons_role"],
        "Consent-remote-consultation": consent(r),
        "ServiceRequest-consult-request": service_request(r),
        "Task-requested": task(r),
        "Task-awaiting-information": {**task(r, "in-progress", "awaiting-information"),
                                      "owner": {"reference": r["cons_role"]}},
        "Task-completed": completed_task(r),
        "Task-follow-up": follow_up_task(r),
        "Task-follow-up-overdue": overdue_follow_up(r),
        "OrganizationAffiliation-consult-network": network(r),
        "Communication-question": communication(r),
        "Communication-answer": communication(r, answer=True),
        "DocumentReference-consult-note": consult_note(r),
        "MessageHeader-consult-request": message_header(r, "consult-request", [r["sr"]]),
    }


# -- Bundles --------------------------------------------------------------------------------------


def entry(r: dict[str, str], key: str, res: Json, method: str | None = None) -> Json:
    e: Json = {"fullUrl": r[key], "resource": res}
    if method == "POST":
        e["request"] = {"method": "POST", "url": res["resourceType"]}
    elif method == "PUT":
        e["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
    return e


def strip_id(res: Json) -> Json:
    out = copy.deepcopy(res)
    out.pop("id", None)
    return out


def bundles() -> dict[str, Json]:
    new = {**ABS, **{k: UUID[k] for k in ("pat", "consent", "sr", "task", "header", "question", "answer", "note")}}
    later = {**ABS, **{k: UUID[k] for k in ("header", "question", "answer", "note")}}
    out: dict[str, Json] = {}

    def message(name: str, event: str, r: dict[str, str], focus_key: str, body: list[Json], n: int,
                profile: str) -> None:
        header = message_header(r, event, [r[focus_key]])
        out[f"Bundle-message-{name}"] = {
            "resourceType": "Bundle", "id": f"message-{name}", "meta": meta(profile),
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:6f1c0b2e-0000-4000-8000-{n:012d}"},
            "type": "message", "timestamp": "2025-03-05T16:00:00+09:00",
            # R4 MessageHeader.response.identifier names the request header by id: the header keeps it.
            "entry": [entry(r, "header", header), *body],
        }

    def transaction(name: str, body: list[Json]) -> None:
        out[f"Bundle-transaction-{name}"] = {
            "resourceType": "Bundle", "id": f"transaction-{name}", "meta": meta("consult-transaction-bundle"),
            "type": "transaction", "entry": body,
        }

    # consult-request: the requester creates patient, consent, request and the requested Task.
    created = [("pat", patient(new["req_org"])), ("consent", consent(new)), ("sr", service_request(new)),
               ("task", task(new))]
    transaction("consult-request", [entry(new, k, strip_id(v), "POST") for k, v in created])
    message("consult-request", "consult-request", new, "sr", [entry(new, k, strip_id(v)) for k, v in created], 1,
            "consult-request-message")
    # consult-status-update: the consultant accepts, then asks for information.
    upd = task(ABS, "in-progress", "awaiting-information")
    upd["owner"] = {"reference": ABS["cons_role"]}
    upd["lastModified"] = "2025-03-04T10:00:00+09:00"
    r_upd = {**later, "task": ABS["task"]}
    transaction("consult-status-update", [entry(r_upd, "task", upd, "PUT")])
    message("consult-status-update", "consult-status-update", r_upd, "task", [entry(r_upd, "task", upd)], 2,
            "consult-status-update-message")
    # consult-communication: the consultant's question and the requester's answer.
    q, a = communication(later), communication(later, answer=True)
    transaction("consult-communication", [entry(later, "question", strip_id(q), "POST"),
                                          entry(later, "answer", strip_id(a), "POST")])
    message("consult-communication", "consult-communication", later, "answer",
            [entry(later, "answer", strip_id(a)), entry(later, "question", strip_id(q))], 3,
            "consult-communication-message")
    # consult-report: the completed Task with its consult note.
    done = completed_task(later)
    transaction("consult-report", [entry(later, "note", strip_id(consult_note(later)), "POST"),
                                   entry(ABS, "task", done, "PUT")])
    message("consult-report", "consult-report", {**later, "task": ABS["task"]}, "task",
            [entry(ABS, "task", done), entry(later, "note", strip_id(consult_note(later)))], 4,
            "consult-report-message")
    # consult-cancel: the requester revokes the request before work began.
    revoked = service_request(ABS)
    revoked["status"] = "revoked"
    transaction("consult-cancel", [entry(ABS, "sr", revoked, "PUT")])
    message("consult-cancel", "consult-cancel", ABS, "sr", [entry(ABS, "sr", revoked)], 5, "consult-cancel-message")
    return out


# -- invalid examples -----------------------------------------------------------------------------

Mutation = Callable[[Json], None]


def invalid_examples(valid: dict[str, Json], bdl: dict[str, Json]) -> list[tuple[str, Json, Json]]:
    """(file stem, resource, manifest entry) for every invalid example."""
    cases: list[tuple[str, Json, Json]] = []

    def add(stem: str, base: Json, mutate: Mutation, rule: str, needs: list[str],
            element: str | None = None, also: list[str] | None = None, profile: str | None = None) -> None:
        res = copy.deepcopy(base)
        mutate(res)
        if profile:
            res["meta"] = meta(profile)
        info: Json = {"rule": rule, "profile": res["meta"]["profile"][0], "needs": needs}
        if element:
            info["element"] = element
        if also:
            info["also"] = also
        cases.append((stem, res, info))

    inv = [PROFILES, INVARIANTS]
    card = [PROFILES]
    v = valid
    pat, org, ep = v["Patient-consult-patient"], v["Organization-requester"], v["Endpoint-vpn-emr"]
    prac, role, con = v["Practitioner-requester"], v["PractitionerRole-requester"], v["Consent-remote-consultation"]
    sr, tsk, done = v["ServiceRequest-consult-request"], v["Task-requested"], v["Task-completed"]
    ans, note, hdr = v["Communication-answer"], v["DocumentReference-consult-note"], v["MessageHeader-consult-request"]

    # Patient (KR Core; PIPA Art. 24-2)
    add("Patient-missing-mrn", pat, lambda r: r["identifier"][0].pop("type"), "cx-pat-1", inv)
    add("Patient-rrn-system", pat, lambda r: r["identifier"].append(
        {"system": "http://www.hl7korea.or.kr/Identifier/rrn", "value": "withheld"}), "cx-rrn-1", inv)
    add("Patient-rrn-value", pat, lambda r: r["identifier"].append(
        {"system": "http://hospital-a.example.kr/other-id", "value": "480302-1234567"}), "cx-rrn-2", inv)
    add("Patient-identifier-without-system", pat, lambda r: r["identifier"].append({"value": "X-1"}),
        "sd-cardinality-min", card, element="Patient.identifier.system")
    # Organization (KR Core; HIRA)
    add("Organization-hira-not-normalised", org, lambda r: r["identifier"][0].update(value="1234-5678"),
        "cx-org-1", inv)
    add("Organization-missing-hira", org, lambda r: r["identifier"].__setitem__(
        0, {"system": "http://www.nts.go.kr/business-registration", "value": "1018212345"}),
        "sd-cardinality-min", [PROFILES, SLICING], element="Organization.identifier:HIRA")
    add("Organization-missing-active", org, lambda r: r.pop("active"), "sd-cardinality-min", card,
        element="Organization.active")
    # Practitioner (KR Core; PIPA Art. 24-2)
    add("Practitioner-rrn-identifier", prac, lambda r: r["identifier"].append(
        {"system": "http://hospital-a.example.kr/staff-id", "value": "7501011234567"}), "cx-rrn-2", inv)
    add("Practitioner-missing-licence", prac, lambda r: r["qualification"][0].update(
        identifier=[{"system": "http://hospital-a.example.kr/staff-licence", "value": "102938"}]),
        "sd-cardinality-min", [PROFILES, SLICING], element="Practitioner.qualification.identifier:MOHW")
    # PractitionerRole
    add("PractitionerRole-missing-organization", role, lambda r: r.pop("organization"), "sd-cardinality-min", card,
        element="PractitionerRole.organization")
    add("PractitionerRole-missing-practitioner", role, lambda r: r.pop("practitioner"), "sd-cardinality-min", card,
        element="PractitionerRole.practitioner")
    # Endpoint (connection style)
    add("Endpoint-exchange-system-over-rest", v["Endpoint-exchange-system"],
        lambda r: r["connectionType"].update(code="hl7-fhir-rest"), "cx-ep-1", inv)
    add("Endpoint-vpn-emr-without-tls", ep, lambda r: r.update(address="http://emr.hospital-a.example.kr/fhir"),
        "cx-ep-2", inv)
    add("Endpoint-missing-connection-style", ep, lambda r: r.pop("extension"), "sd-cardinality-min",
        [PROFILES, SLICING], element="Endpoint.extension:connectionStyle")
    add("Endpoint-unknown-connection-style", ep, lambda r: r["extension"][0].update(valueCode="fax"),
        "tx-code-not-in-valueset", [PROFILES, SLICING, BINDINGS],
        element="Endpoint.extension:connectionStyle")
    # Consent (IHE PCF)
    add("Consent-wrong-category", con, lambda r: r.update(
        category=[{"coding": [{"system": LOINC, "code": "57016-8"}]}]), "cx-con-1", inv)
    add("Consent-purpose-not-treat", con, lambda r: r["provision"].update(
        purpose=[{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}]),
        "cx-con-2", inv)
    add("Consent-no-recipient", con, lambda r: r["provision"]["actor"][0]["role"]["coding"][0].update(code="PRCP"),
        "cx-con-3", inv)
    add("Consent-open-ended-period", con, lambda r: r["provision"]["period"].pop("end"), "cx-con-4", inv)
    add("Consent-status-draft", con, lambda r: r.update(status="draft"), "cx-con-5", inv)
    add("Consent-deny-provision", con, lambda r: r["provision"].update(type="deny"), "sd-fixed-mismatch", card,
        element="Consent.provision.type")
    add("Consent-missing-policy-uri", con, lambda r: (r.pop("policy"), r.update(
        policyRule={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]})),
        "sd-cardinality-min", card, element="Consent.policy")
    add("Consent-missing-organization", con, lambda r: r.pop("organization"), "sd-cardinality-min", card,
        element="Consent.organization")
    # ServiceRequest (BSeR; CA:eReC)
    add("ServiceRequest-status-on-hold", sr, lambda r: r.update(status="on-hold"), "cx-sr-1", inv)
    add("ServiceRequest-intent-plan", sr, lambda r: r.update(intent="plan"), "sd-fixed-mismatch", card,
        element="ServiceRequest.intent")
    add("ServiceRequest-missing-performer", sr, lambda r: r.pop("performer"), "sd-cardinality-min", card,
        element="ServiceRequest.performer")
    add("ServiceRequest-missing-requester", sr, lambda r: r.pop("requester"), "sd-cardinality-min", card,
        element="ServiceRequest.requester")
    add("ServiceRequest-missing-placer-identifier", sr, lambda r: r["identifier"][0]["type"]["coding"][0].update(
        code="FILL"), "cx-sr-2", inv)
    add("ServiceRequest-wrong-category", sr, lambda r: r["category"][0]["coding"][0].update(code="consult-question"),
        "sd-pattern-mismatch", card, element="ServiceRequest.category")
    add("ServiceRequest-missing-code", sr, lambda r: r.pop("code"), "sd-cardinality-min", card,
        element="ServiceRequest.code")
    add("ServiceRequest-reason-without-text", sr, lambda r: r["reasonCode"][0].pop("text"), "sd-cardinality-min", card,
        element="ServiceRequest.reasonCode.text")
    add("ServiceRequest-malformed-kcd8", sr, lambda r: r["reasonCode"][0]["coding"][0].update(code="I639"),
        "cx-sr-3", inv)
    add("ServiceRequest-missing-consent", sr, lambda r: r.update(
        supportingInfo=[{"reference": "Observation/mmse", "type": "Observation"}]), "cx-sr-4", inv)
    # Task (R4 workflow option H; BSeR; COW)
    add("Task-basedon-differs-from-focus", tsk, lambda r: r.update(basedOn=[{"reference": "ServiceRequest/other"}]),
        "cx-task-1", inv)
    add("Task-missing-owner", tsk, lambda r: r.pop("owner"), "sd-cardinality-min", card, element="Task.owner")
    add("Task-missing-focus", tsk, lambda r: r.pop("focus"), "sd-cardinality-min", card, element="Task.focus",
        also=["cx-task-1"])
    add("Task-rejected-without-reason", tsk, lambda r: r.update(status="rejected"), "cx-task-2", inv)
    add("Task-completed-without-note", done, lambda r: r.pop("output"), "cx-task-3", inv)
    add("Task-businessstatus-copies-status", tsk, lambda r: r.update(
        status="in-progress", businessStatus={"coding": [{"system": "http://hl7.org/fhir/task-status",
                                                           "code": "in-progress"}]}),
        "cx-task-4", [*inv, BINDINGS], also=["tx-code-not-in-valueset"])
    add("Task-awaiting-information-when-accepted", v["Task-awaiting-information"], lambda r: r.update(
        status="accepted"), "cx-task-5", inv)
    follow = v["Task-follow-up"]
    add("Task-follow-up-without-partof", follow, lambda r: r.pop("partOf"), "cx-task-6", inv)
    add("Task-follow-up-without-due-date", follow, lambda r: r.pop("restriction"), "cx-task-7", inv)
    add("Task-overdue-on-consult", tsk, lambda r: r.update(businessStatus={"coding": [
        {"system": CS + "consult-business-status", "code": "overdue"}]}), "cx-task-8", inv)
    add("Task-lastmodified-before-authored", tsk, lambda r: r.update(lastModified="2025-03-03T09:00:00+09:00"),
        "inv-1", [INVARIANTS])
    # Communication (CA:eReC; Ontario eConsult)
    add("Communication-status-in-progress", ans, lambda r: r.update(status="in-progress"), "cx-comm-1", inv)
    add("Communication-answer-without-question", ans, lambda r: r.pop("inResponseTo"), "cx-comm-2", inv)
    add("Communication-missing-basedon", ans, lambda r: r.pop("basedOn"), "sd-cardinality-min", card,
        element="Communication.basedOn")
    add("Communication-missing-payload", ans, lambda r: r.pop("payload"), "sd-cardinality-min", card,
        element="Communication.payload")
    # DocumentReference (consult note)
    add("DocumentReference-not-a-consult-note", note, lambda r: r["type"]["coding"][0].update(code="18842-5"),
        "sd-pattern-mismatch", card, element="DocumentReference.type")
    add("DocumentReference-attachment-without-content", note, lambda r: r["content"][0]["attachment"].pop("data"),
        "cx-doc-1", inv)
    add("DocumentReference-missing-related-request", note, lambda r: r.pop("context"), "sd-cardinality-min", card,
        element="DocumentReference.context")
    add("DocumentReference-unknown-recommendation", note, lambda r: r["category"][0]["coding"][0].update(
        code="admit", display="Admit"), "tx-code-not-in-valueset", [PROFILES, SLICING, BINDINGS],
        element="DocumentReference.category:recommendation")
    add("DocumentReference-two-recommendations", note, lambda r: r["category"].append(
        {"coding": [{"system": CS + "consult-recommendation", "code": "transfer-routine"}]}),
        "sd-cardinality-max", [PROFILES, SLICING], element="DocumentReference.category:recommendation")
    # OrganizationAffiliation (consult network)
    net = v["OrganizationAffiliation-consult-network"]
    add("OrganizationAffiliation-hub-is-partner", net, lambda r: r.update(
        participatingOrganization=dict(r["organization"])), "cx-net-1", inv)
    add("OrganizationAffiliation-missing-active", net, lambda r: r.pop("active"), "sd-cardinality-min", card,
        element="OrganizationAffiliation.active")
    # MessageHeader (messaging.html)
    add("MessageHeader-unknown-event", hdr, lambda r: r["eventCoding"].update(code="referral-request"),
        "tx-code-not-in-valueset", [PROFILES, BINDINGS], element="MessageHeader.event[x]")
    add("MessageHeader-event-uri", hdr, lambda r: (r.pop("eventCoding"), r.update(
        eventUri="http://fhir-exchange.org/fhir/consult-request")), "sd-type-not-allowed", card,
        element="MessageHeader.event[x]")
    add("MessageHeader-missing-sender", hdr, lambda r: r.pop("sender"), "sd-cardinality-min", card,
        element="MessageHeader.sender")

    # Bundles (the message rules, the reference rule and the cross-resource rules)
    req_msg, req_tx = bdl["Bundle-message-consult-request"], bdl["Bundle-transaction-consult-request"]
    binv = [PROFILES, INVARIANTS, RESOLVE]

    def res_of(b: Json, rt: str) -> Json:
        return next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == rt)

    def header_not_first(b: Json) -> None:
        b["entry"].append(b["entry"].pop(0))

    add("Bundle-message-header-not-first", req_msg, header_not_first, "bdl-12", [INVARIANTS],
        profile="consult-message-bundle")
    add("Bundle-message-focus-outside-bundle", bdl["Bundle-message-consult-status-update"],
        lambda b: res_of(b, "MessageHeader")["focus"].__setitem__(0, {"reference": f"{EXCHANGE}/Task/other"}),
        "cx-msg-1", [PROFILES, INVARIANTS], profile="consult-message-bundle")

    def duplicate_fullurl(b: Json) -> None:
        b["entry"][1]["fullUrl"] = b["entry"][0]["fullUrl"]

    add("Bundle-duplicate-fullurl", bdl["Bundle-transaction-consult-communication"], duplicate_fullurl, "bdl-7",
        [INVARIANTS], also=["bundle-duplicate-fullurl"])
    add("Bundle-reference-outside-bundle", req_tx, lambda b: res_of(b, "Task").update(
        **{"for": {"reference": "urn:uuid:99999999-0000-4000-8000-000000000000"}}), "cx-bdl-1",
        [PROFILES, INVARIANTS],
        also=["cx-bdl-3"])

    def other_patient(b: Json) -> None:
        other = strip_id(patient(ABS["req_org"]))
        other["identifier"][0]["value"] = "A-000999"
        b["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000099", "resource": other,
                           "request": {"method": "POST", "url": "Patient"}})
        res_of(b, "Consent")["patient"] = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000099"}
        res_of(b, "Consent")["performer"] = [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000099"}]

    add("Bundle-consent-for-another-patient", req_tx, other_patient, "cx-bdl-2", binv)
    add("Bundle-task-requester-differs", req_tx, lambda b: res_of(b, "Task").update(
        requester={"reference": ABS["cons_role"]}), "cx-bdl-3", binv)

    def comm_other_subject(b: Json) -> None:
        b["entry"].insert(1, {"fullUrl": UUID["sr"], "resource": strip_id(service_request(ABS)),
                              "request": {"method": "PUT", "url": "ServiceRequest/sr"}})
        b["entry"][1]["resource"]["id"] = "sr"
        for e in b["entry"]:
            if e["resource"]["resourceType"] == "Communication":
                e["resource"]["basedOn"] = [{"reference": UUID["sr"]}]
        res_of(b, "Communication")["subject"] = {"reference": f"{EXCHANGE}/Patient/someone-else"}

    add("Bundle-communication-about-another-patient", bdl["Bundle-transaction-consult-communication"],
        comm_other_subject, "cx-bdl-4", binv)

    def output_not_note(b: Json) -> None:
        note_entry = next(e for e in b["entry"] if e["resource"]["resourceType"] == "DocumentReference")
        note_entry["resource"] = {"resourceType": "Binary", "contentType": "text/plain", "data": "7IaM6rKs"}
        note_entry["request"] = {"method": "POST", "url": "Binary"}

    add("Bundle-report-output-not-a-note", bdl["Bundle-transaction-consult-report"], output_not_note, "cx-bdl-5", binv)
    add("Bundle-request-wrong-event", req_msg, lambda b: res_of(b, "MessageHeader")["eventCoding"].update(
        code="consult-report"), "cx-mreq-1", binv)
    add("Bundle-request-consent-withdrawn", req_msg, lambda b: res_of(b, "Consent").update(status="inactive"),
        "cx-mreq-2", binv)
    add("Bundle-request-consent-for-other-institution", req_msg, lambda b: res_of(b, "Consent")["provision"][
        "actor"][0].update(reference={"reference": f"{EXCHANGE}/Organization/hospital-z"}), "cx-mreq-3", binv)
    add("Bundle-request-without-task", req_msg, lambda b: b["entry"].pop(), "cx-mreq-4", binv)

    def focus_sr(b: Json) -> None:
        b["entry"].append(entry(ABS, "sr", service_request(ABS)))
        res_of(b, "MessageHeader")["focus"] = [{"reference": ABS["sr"]}]

    add("Bundle-status-update-focus-not-task", bdl["Bundle-message-consult-status-update"], focus_sr, "cx-mstu-1", binv)
    add("Bundle-communication-focus-not-communication", bdl["Bundle-message-consult-communication"],
        lambda b: b["entry"].__setitem__(0, {**b["entry"][0], "resource": {**b["entry"][0]["resource"], "eventCoding": {
            "system": CS + "consult-event", "code": "consult-status-update"}}}), "cx-mcom-1", binv)

    def report_in_progress(b: Json) -> None:
        t = res_of(b, "Task")
        t["status"] = "in-progress"
        t.pop("output")

    add("Bundle-report-task-not-completed", bdl["Bundle-message-consult-report"], report_in_progress, "cx-mrep-1", binv)
    add("Bundle-cancel-request-still-active", bdl["Bundle-message-consult-cancel"],
        lambda b: res_of(b, "ServiceRequest").update(status="active"), "cx-mcan-1", binv)
    return cases


def write(path: Path, res: Json) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    valid = valid_resources()
    bdl = bundles()
    for folder in ("valid", "invalid", "bundles"):
        for old in (HERE / folder).glob("*.json"):
            old.unlink()
    for stem, res in valid.items():
        write(HERE / "valid" / f"{stem}.json", res)
    for stem, res in bdl.items():
        write(HERE / "bundles" / f"{stem}.json", res)
    manifest: Json = {}
    for stem, res, info in invalid_examples(valid, bdl):
        write(HERE / "invalid" / f"{stem}.json", res)
        manifest[f"{stem}.json"] = info
    write(HERE / "invalid" / "manifest.json", manifest)


if __name__ == "__main__":
    main()
