"""A consult network with authentication on, shared by the workflow scenario tests: a requester
(partner), a consultant (hub) affiliated with it, and a third institution, each with its own client,
its Practitioner and PractitionerRole; a clock the tests can move; builders of consult resources with
fresh ids (every test makes its own patient and consult)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.clock import Clock
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.security.conftest import BASE, enrol, token_form

CATEGORY = "http://fhir-exchange.org/fhir/CodeSystem/consult-category"
TASK_CODE = "http://fhir-exchange.org/fhir/CodeSystem/consult-task-code"
BUSINESS = "http://fhir-exchange.org/fhir/CodeSystem/consult-business-status"
EVENT = "http://fhir-exchange.org/fhir/CodeSystem/consult-event"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LOINC = "http://loinc.org"
DEPARTMENT = "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department"
PROFILE = "http://fhir-exchange.org/fhir/StructureDefinition/"


@dataclass
class MovableClock:
    """The real time plus an offset a test may move (and must move back)."""

    offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def clock(self) -> Clock:
        return Clock(now=self.now)


@dataclass
class Party:
    """An enrolled institution: its Organization, its PractitionerRole, and a client acting for it."""

    name: str
    org: str
    role: str
    http: httpx.AsyncClient

    @property
    def org_ref(self) -> str:
        return f"Organization/{self.org}"

    @property
    def role_ref(self) -> str:
        return f"PractitionerRole/{self.role}"


@dataclass
class Network:
    app: Starlette
    clock: MovableClock
    partner: Party  # the requester
    hub: Party  # the consultant
    third: Party  # neither party of any consult here
    clients: list[httpx.AsyncClient] = field(default_factory=list)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def today(clock: MovableClock, days: int = 0) -> str:
    return (clock.now() + timedelta(days=days)).date().isoformat()


def network_settings(tmp: Path) -> Settings:
    return Settings(data_dir=tmp, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024, auth=True,
                    rate_limit=0, token_lifetime=400 * 86_400, consult_sweep_interval=86_400.0)


async def open_network(tmp: Path, definitions: Definitions, *, settings: Settings | None = None,
                       hub: str = "emr") -> AsyncIterator[Network]:
    """Partner, hub and third institution on a server with authentication on (the hub connects as ``hub``:
    "exchange" for an exchange system)."""
    clock = MovableClock()
    settings = settings or network_settings(tmp)
    app = create_app(settings, definitions=definitions, clock=clock.clock())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        parties: dict[str, Party] = {}
        clients: list[httpx.AsyncClient] = []
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as anonymous:
            for name, hira, conn in (("partner", "31000001", "emr"), ("hub", "31000002", hub),
                                     ("third", "31000003", "emr")):
                inst = await enrol(app, f"{name} hospital", hira, conn)
                r = await anonymous.post("/auth/token", data=token_form(inst.client_id, inst.pem, "system/*.cruds"))
                assert r.status_code == 200, r.text
                http = httpx.AsyncClient(transport=transport, base_url=BASE,
                                         headers={"Authorization": f"Bearer {r.json()['access_token']}"})
                clients.append(http)
                party = Party(name, inst.organization, f"{name}-role", http)
                await directory(party)
                parties[name] = party
        net = Network(app, clock, parties["partner"], parties["hub"], parties["third"], clients)
        r = await net.hub.http.post("/OrganizationAffiliation", json=affiliation(net.hub, net.partner))
        assert r.status_code == 201, r.text
        try:
            yield net
        finally:
            for c in clients:
                await c.aclose()


async def directory(party: Party) -> None:
    """The party's doctor and role, written by the party itself (it owns its directory entries)."""
    doctor = {"resourceType": "Practitioner", "id": f"{party.name}-doc", "active": True,
              "name": [{"text": f"{party.name} doctor"}]}
    role = {"resourceType": "PractitionerRole", "id": party.role,
            "meta": {"profile": [PROFILE + "consult-practitioner-role"]}, "active": True,
            "practitioner": {"reference": f"Practitioner/{party.name}-doc"},
            "organization": {"reference": party.org_ref},
            "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                  "code": "doctor"}]}],
            "specialty": [{"coding": [{"system": DEPARTMENT, "code": "02"}]}]}
    for res in (doctor, role):
        r = await party.http.put(f"/{res['resourceType']}/{res['id']}", json=res)
        assert r.status_code in (200, 201), r.text


def affiliation(hub: Party, partner: Party, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "OrganizationAffiliation", "active": True,
            "organization": {"reference": hub.org_ref},
            "participatingOrganization": {"reference": partner.org_ref}, **extra}


# -- consult resources --------------------------------------------------------------------------------


@dataclass
class Consult:
    """The ids of one consult (all fresh) and the parties it is between."""

    requester: Party
    consultant: Party
    patient: str = field(default_factory=lambda: new_id("pat"))
    consent: str = field(default_factory=lambda: new_id("consent"))
    request: str = field(default_factory=lambda: new_id("sr"))
    task: str = field(default_factory=lambda: new_id("task"))

    def patient_resource(self) -> dict[str, Any]:
        return {"resourceType": "Patient", "id": self.patient,
                "meta": {"profile": [PROFILE + "consult-patient"]},
                "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                     "code": "MR"}]},
                                "system": "http://partner.example.kr/mrn", "value": self.patient,
                                "assigner": {"reference": self.requester.org_ref}}],
                "name": [{"text": "김민수"}], "gender": "male", "birthDate": "1948-03-02"}

    def consent_resource(self, *, id: str | None = None, status: str = "active", patient: str | None = None,
                         recipient: str | None = None, purpose: str = "TREAT", start: str = "2020-01-01",
                         end: str = "2099-12-31", deny: list[dict[str, Any]] | None = None,
                         organization: str | None = None, provision_type: str = "permit") -> dict[str, Any]:
        provision: dict[str, Any] = {
            "type": provision_type, "period": {"start": start, "end": end},
            "actor": [{"role": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
                       "reference": {"reference": recipient or self.consultant.org_ref}}],
            "purpose": [{"system": ACT_REASON, "code": purpose}]}
        if deny:
            provision["provision"] = deny
        return {"resourceType": "Consent", "id": id or self.consent, "status": status,
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{patient or self.patient}"},
                "dateTime": "2025-03-03T09:00:00+09:00",
                "performer": [{"reference": f"Patient/{patient or self.patient}"}],
                "organization": [{"reference": organization or self.requester.org_ref}],
                "sourceAttachment": {"contentType": "application/pdf", "url": "https://partner.example.kr/c.pdf"},
                "policy": [{"uri": "https://partner.example.kr/policies/remote-consultation"}],
                "provision": provision}

    def request_resource(self, *, status: str = "active", consents: list[str] | None = None,
                         performer: str | None = None, supporting: list[str] | None = None,
                         subject: str | None = None, requester: str | None = None) -> dict[str, Any]:
        cited = [self.consent] if consents is None else consents
        return {"resourceType": "ServiceRequest", "id": self.request,
                "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                     "code": "PLAC"}]},
                                "system": "http://partner.example.kr/consult-requests", "value": self.request}],
                "status": status, "intent": "order",
                "category": [{"coding": [{"system": CATEGORY, "code": "remote-consultation"}]}],
                "priority": "routine",
                "code": {"coding": [{"system": DEPARTMENT, "code": "02", "display": "신경과"}], "text": "신경과"},
                "subject": {"reference": f"Patient/{subject or self.patient}"},
                "authoredOn": "2025-03-03T09:30:00+09:00",
                "requester": {"reference": requester or self.requester.role_ref},
                "performer": [{"reference": performer or self.consultant.org_ref}],
                "reasonCode": [{"coding": [{"system": "http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8",
                                            "code": "I63.9"}], "text": "뇌경색"}],
                "supportingInfo": [{"reference": f"Consent/{c}", "type": "Consent"} for c in cited]
                + [{"reference": ref} for ref in supporting or []]}

    def task_resource(self, *, status: str = "requested", owner: str | None = None, id: str | None = None,
                      business: str | None = None, output: str | None = None, reason: str | None = None,
                      inputs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        task: dict[str, Any] = {
            "resourceType": "Task", "id": id or self.task,
            "basedOn": [{"reference": f"ServiceRequest/{self.request}"}], "status": status, "intent": "order",
            "code": {"coding": [{"system": TASK_CODE, "code": "consult"}]},
            "focus": {"reference": f"ServiceRequest/{self.request}"},
            "for": {"reference": f"Patient/{self.patient}"}, "authoredOn": "2025-03-03T09:30:00+09:00",
            "requester": {"reference": self.requester.role_ref},
            "owner": {"reference": owner or self.consultant.org_ref}}
        if reason or status in ("rejected", "cancelled", "failed", "on-hold"):
            task["statusReason"] = {"text": reason or f"{status} for a reason"}
        if business:
            task["businessStatus"] = {"coding": [{"system": BUSINESS, "code": business}]}
        if inputs:
            task["input"] = [{"type": {"text": "supporting information"}, "valueReference": {"reference": ref}}
                             for ref in inputs]
        if output:
            task["output"] = [{"type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
                               "valueReference": {"reference": output}}]
        task.update(extra)
        return task

    def communication(self, id: str, *, answer: bool = False, sender: str | None = None,
                      recipient: str | None = None, subject: str | None = None,
                      in_response_to: str | None = None) -> dict[str, Any]:
        consultant_side = not answer
        comm: dict[str, Any] = {
            "resourceType": "Communication", "id": id,
            "basedOn": [{"reference": f"ServiceRequest/{self.request}"}],
            "partOf": [{"reference": f"Task/{self.task}"}], "status": "completed",
            "category": [{"coding": [{"system": CATEGORY, "code": "consult-answer" if answer else
                                      "consult-question"}]}],
            "subject": {"reference": f"Patient/{subject or self.patient}"}, "sent": "2025-03-04T10:00:00+09:00",
            "recipient": [{"reference": recipient or (self.requester.role_ref if consultant_side
                                                      else self.consultant.role_ref)}],
            "sender": {"reference": sender or (self.consultant.role_ref if consultant_side
                                               else self.requester.role_ref)},
            "payload": [{"contentString": "보내드립니다." if answer else "최근 MRI 결과를 공유해 주실 수 있습니까?"}]}
        if in_response_to:
            comm["inResponseTo"] = [{"reference": in_response_to}]
        return comm

    def note(self, id: str, *, request: str | None = None, subject: str | None = None,
             loinc: str = "11488-4") -> dict[str, Any]:
        note: dict[str, Any] = {
                "resourceType": "DocumentReference", "id": id,
                "status": "current", "docStatus": "final",
                "type": {"coding": [{"system": LOINC, "code": loinc}]},
                "subject": {"reference": f"Patient/{subject or self.patient}"},
                "date": "2025-03-05T15:50:00+09:00", "author": [{"reference": self.consultant.role_ref}],
                "custodian": {"reference": self.consultant.org_ref},
                "content": [{"attachment": {"contentType": "text/plain", "data": "7Iug6rK9", "title": "소견서"}}],
                "context": {"related": [{"reference": f"ServiceRequest/{request or self.request}"}]}}
        if loinc == "11488-4":
            note["meta"] = {"profile": [PROFILE + "consult-note"]}
        return note


def observation(id: str, patient: str, *, label: str | None = None) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "id": id, "status": "final",
                           "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                           "subject": {"reference": f"Patient/{patient}"},
                           "valueQuantity": {"value": 72, "unit": "/min"}}
    if label:
        obs["meta"] = {"security": [{"system": CONFIDENTIALITY, "code": label}]}
    return obs


def deny_class(type: str) -> dict[str, Any]:
    return {"type": "deny", "class": [{"system": RESOURCE_TYPES, "code": type}]}


def deny_label(code: str) -> dict[str, Any]:
    return {"type": "deny", "securityLabel": [{"system": CONFIDENTIALITY, "code": code}]}


# -- Bundles ------------------------------------------------------------------------------------------


def put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    rt, rid = resource["resourceType"], resource["id"]
    return {"fullUrl": f"{BASE}/{rt}/{rid}", "resource": resource, "request": {"method": "PUT", "url": f"{rt}/{rid}"}}


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [put_entry(r) for r in resources]}


def absolute(resource: dict[str, Any], local: set[str]) -> dict[str, Any]:
    """``resource`` with every relative reference to something outside the message made absolute (a message
    names what it does not carry by its full URL, cx-bdl-1)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "reference" and isinstance(v, str) and "/" in v and not v.startswith(("http", "urn:")) \
                        and v not in local:
                    out[k] = f"{BASE}/{v}"
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    out: dict[str, Any] = walk(resource)
    return out


def message(event: str, sender: Party, receiver: Party, focus: dict[str, Any], *resources: dict[str, Any]
            ) -> dict[str, Any]:
    """A consult message carrying ``resources`` (with their ids: updates-as-create), ``focus`` among them."""
    local = {f"{r['resourceType']}/{r['id']}" for r in resources}
    header = {"resourceType": "MessageHeader", "id": new_id("mh"),
              "meta": {"profile": [PROFILE + "consult-message-header"]},
              "eventCoding": {"system": EVENT, "code": event},
              "destination": [{"endpoint": f"{BASE}/$process-message",
                               "receiver": {"reference": f"{BASE}/{receiver.org_ref}"}}],
              "sender": {"reference": f"{BASE}/{sender.org_ref}"},
              "source": {"endpoint": f"https://{sender.name}.example.kr/fhir"},
              "focus": [{"reference": f"{BASE}/{focus['resourceType']}/{focus['id']}"}]}
    return {"resourceType": "Bundle", "type": "message", "timestamp": "2025-03-05T16:00:00+09:00",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": header}]
            + [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": absolute(r, local)}
               for r in resources]}


# -- answers ------------------------------------------------------------------------------------------


def rules(r: httpx.Response) -> list[str]:
    """The rule ids an OperationOutcome (or the outcome of a response message) names."""
    body = r.json()
    if body.get("resourceType") == "Bundle":
        body = next((e["resource"] for e in body["entry"][1:]
                     if e["resource"].get("resourceType") == "OperationOutcome"), {})
    out = []
    for issue in body.get("issue", []):
        out += [c.get("code") for c in (issue.get("details") or {}).get("coding", [])]
        diagnostics = issue.get("diagnostics", "")
        if diagnostics.startswith("cw-"):
            out.append(diagnostics.split(":", 1)[0])
    return out


def refused(r: httpx.Response, status: int, rule: str) -> None:
    assert r.status_code == status, f"{r.status_code} (expected {status} {rule}): {r.text}"
    assert rule in rules(r), f"expected {rule}: {r.text}"


def fatal(r: httpx.Response, rule: str) -> None:
    """A message refused: a fatal-error response message naming ``rule``."""
    assert r.status_code == 200, r.text
    header = r.json()["entry"][0]["resource"]
    assert header["response"]["code"] == "fatal-error", r.text
    assert rule in rules(r), f"expected {rule}: {r.text}"


def ok_message(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    header = r.json()["entry"][0]["resource"]
    assert header["response"]["code"] == "ok", r.text


# -- steps --------------------------------------------------------------------------------------------


async def put(party: Party, resource: dict[str, Any]) -> httpx.Response:
    return await party.http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)


async def written(party: Party, resource: dict[str, Any]) -> dict[str, Any]:
    r = await put(party, resource)
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


async def opened(net: Network, c: Consult | None = None) -> Consult:
    """A consult requested by the partner of the hub: Patient, Consent, ServiceRequest, Task (requested)."""
    c = c or Consult(net.partner, net.hub)
    for res in (c.patient_resource(), c.consent_resource(), c.request_resource(), c.task_resource()):
        r = await put(c.requester, res)
        assert r.status_code == 201, r.text
    return c


async def advanced(c: Consult, status: str, **task: Any) -> Consult:
    """The consult's Task moved by the consultant, through legal steps, to ``status`` (accepted by its
    PractitionerRole)."""
    path = {"received": ["received"], "accepted": ["accepted"], "in-progress": ["accepted", "in-progress"],
            "on-hold": ["accepted", "in-progress", "on-hold"], "rejected": ["rejected"],
            "completed": ["accepted", "in-progress", "completed"]}[status]
    for step in path:
        if step == "completed":
            await written(c.consultant, c.note(f"{c.request}-note"))
            task = {"output": f"DocumentReference/{c.request}-note", **task}
        await written(c.consultant, c.task_resource(status=step, owner=c.consultant.role_ref,
                                                    **(task if step == status else {})))
    return c


async def visible(party: Party, ref: str) -> bool:
    r = await party.http.get(f"/{ref}")
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200
