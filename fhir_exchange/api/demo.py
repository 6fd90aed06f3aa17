"""``fhir-exchange demo``: a pilot-like exchange seeded in a fresh store, and two consults walked end to
end through the router as the institutions themselves (authentication on: isolation, the consult
workflow, consent-based grants and Provenance all apply, exactly as for a client with a token).

The three networks are shaped like the pilot's: a university hospital with twelve nursing hospitals;
a university hospital with two rehabilitation hospitals; a public medical centre with three regional
medical centres, each of which is in turn the hub of two partner hospitals. Every institution is
registered (:func:`~fhir_exchange.api.enrolment.add_institution`), every partner affiliated with its
hub (:func:`~fhir_exchange.api.enrolment.add_network`), and each writes its doctors (Practitioner and
PractitionerRole per department) and one patient with a consent naming its hub as recipient.

Then one consult goes over REST (transaction Bundles and PUTs, as a portal or a VPN-linked EMR would
send them) and one over FHIR messages (``$process-message``, as an exchange system sends them), and the
summary is the ``$consult-stats`` answer of the day.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fhir_exchange.api.app import build_router, build_services, load_definitions
from fhir_exchange.api.enrolment import DEPARTMENTS, EnrolmentError, add_institution, add_network, departments
from fhir_exchange.clock import instant
from fhir_exchange.consult.model import RECOMMENDATION_SYSTEM
from fhir_exchange.consult.profiles import CATEGORY_SYSTEM, EVENT_SYSTEM, TASK_CODE_SYSTEM
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.conformance import load_stored
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.stats import groups_of
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.registry import Registry
from fhir_exchange.settings import Settings

BUSINESS = "http://fhir-exchange.org/fhir/CodeSystem/consult-business-status"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DEMO = "https://demo.fhir-exchange.org"
SCOPES = frozenset({"system/*.cruds"})
_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


class DemoError(Exception):
    """The demo cannot run (a store already in use) or a step was refused: the message says which."""


@dataclass(slots=True)
class Site:
    """One institution of the demo."""

    name: str
    hira: str
    connection: str  # portal | emr | exchange
    departments: tuple[str, ...]  # its doctors' departments (HIRA medical department codes)
    org: str = ""
    endpoint: str = ""
    roles: dict[str, str] = field(default_factory=dict)  # department -> PractitionerRole id
    patients: dict[str, tuple[str, str]] = field(default_factory=dict)  # hub org -> (Patient id, Consent id)


@dataclass(slots=True)
class Network:
    hub: Site
    partners: list[Site]
    specialties: tuple[str, ...]


NURSING = ["가온", "나래", "다솜", "라온", "마루", "바른", "사랑", "아름", "자연", "참빛", "큰별", "푸른숲"]
FAMILY = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오", "서", "신", "권", "황"]
GIVEN = ["민수", "영희", "지훈", "서연", "현우", "수빈", "도윤", "하은", "준호", "지민", "예준", "채원"]


def pilot() -> list[Network]:
    """The three networks (HIRA identifiers are made up, 8 digits, unique)."""
    hanbit = Site("한빛대학교병원", "11000001", "emr", ("01", "02", "03", "21"))
    nursing = [Site(f"{n}요양병원", f"{12000001 + i}", "emr" if i % 4 == 3 else "portal", ("01",))
               for i, n in enumerate(NURSING)]
    neulbom = Site("늘봄대학교병원", "21000001", "emr", ("05", "06", "21"))
    rehab = [Site("바다재활병원", "22000001", "exchange", ("21",)), Site("솔빛재활병원", "22000002", "emr", ("21",))]
    central = Site("중앙공공의료원", "31000001", "emr", ("01", "04", "24"))
    regions = [Site(f"{r}권역의료원", f"{32000001 + i}", "emr", ("01", "23"))
               for i, r in enumerate(["강원", "충청", "호남"])]
    locals_ = [[Site(f"{a}병원", f"{33000001 + 2 * i + j}", "portal", ("23",)) for j, a in enumerate(pair)]
               for i, pair in enumerate([("산골", "강변"), ("들녘", "호숫가"), ("섬마을", "갯벌")])]
    return [Network(hanbit, nursing, ("01", "02", "03", "21")),
            Network(neulbom, rehab, ("05", "06", "21")),
            Network(central, regions, ("01", "04", "24")),
            *(Network(region, partners, ("01", "23")) for region, partners in zip(regions, locals_, strict=True))]


class Demo:
    def __init__(self, router: Router, registry: Registry, base: str, out: Callable[[str], None]) -> None:
        self.router = router
        self.registry = registry
        self.base = base
        self.out = out
        self.departments = departments(router)
        self.counter = 0

    # -- plumbing ---------------------------------------------------------------------------------

    def now(self) -> str:
        return instant(self.router.services.clock.now())

    def today(self, days: int = 0) -> str:
        return (self.router.services.clock.now() + timedelta(days=days)).date().isoformat()

    def actor(self, site: Site) -> Actor:
        return Actor(institution=site.org, client_id=f"demo-{site.hira}", scopes=SCOPES)

    async def call(self, site: Site, method: str, path: str, body: Any = None,
                   query: list[tuple[str, str]] | None = None) -> FhirResponse:
        req = FhirRequest(method, path, query or [], {}, body, self.base, self.actor(site))
        try:
            return await self.router.dispatch(req)
        except FhirError as err:
            raise DemoError(f"{site.name}: {method} /{path} was refused ({err.status}): {err.diagnostics}") from None

    async def transaction(self, site: Site, entries: list[dict[str, Any]]) -> list[str]:
        """POST a transaction Bundle as ``site``; the ``Type/id`` each entry wrote. As the consult IG's
        transaction Bundles do (cx-bdl-1), a reference to a resource outside the Bundle is its full URL."""
        local = {str(e["request"]["url"]) for e in entries if e["request"]["method"] == "PUT"}
        entries = [{**e, "resource": absolute(e["resource"], local, self.base)} for e in entries]
        resp = await self.call(site, "POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
        answer = resp.json() or {}
        return [str(e["response"].get("location", "")).split("/_history/")[0].removeprefix(self.base + "/")
                for e in answer.get("entry", [])]

    async def message(self, site: Site, to: Site, event: str, focus: str, entries: list[dict[str, Any]]) -> str:
        """Send a consult message as ``site`` (an exchange system) to ``to``; the response code."""
        header = {"resourceType": "MessageHeader", "id": str(uuid.uuid4()),
                  "eventCoding": {"system": EVENT_SYSTEM, "code": event},
                  "destination": [{"endpoint": f"{self.base}/$process-message",
                                   "receiver": {"reference": self.abs(f"Organization/{to.org}")}}],
                  "sender": {"reference": self.abs(f"Organization/{site.org}")},
                  "source": {"endpoint": f"https://hie-{site.hira}.invalid/fhir"},
                  "focus": [{"reference": focus}]}
        bundle = {"resourceType": "Bundle", "type": "message", "timestamp": self.now(),
                  "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                  "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": header}, *entries]}
        resp = await self.call(site, "POST", "$process-message", bundle)
        answer = resp.json() or {}
        head = answer["entry"][0]["resource"]
        code = str(head["response"]["code"])
        if code != "ok":
            issues = [i.get("diagnostics", "") for e in answer["entry"][1:] for i in e["resource"].get("issue", [])]
            raise DemoError(f"{site.name}: the {event} message was answered {code}: {'; '.join(issues)}")
        return code

    def abs(self, ref: str) -> str:
        return f"{self.base}/{ref}"

    def put(self, resource: dict[str, Any], ref: str | None = None) -> dict[str, Any]:
        """A transaction entry writing ``resource`` at ``ref`` (default: its type and id)."""
        target = ref or f"{resource['resourceType']}/{resource['id']}"
        return {"fullUrl": self.abs(target), "resource": resource, "request": {"method": "PUT", "url": target}}

    def dept(self, code: str) -> dict[str, Any]:
        return {"system": DEPARTMENTS, "code": code, "display": self.departments.get(code, code)}

    def name(self) -> str:
        n = self.counter
        self.counter += 1
        return FAMILY[n % len(FAMILY)] + GIVEN[(n * 5) % len(GIVEN)]

    # -- seeding ----------------------------------------------------------------------------------

    async def enrol(self, site: Site) -> None:
        try:
            org = await add_institution(self.router, self.registry, name=site.name, hira_id=site.hira,
                                        connection=site.connection, endpoint_address=None, base_url=self.base)
        except EnrolmentError as exc:
            raise DemoError(str(exc)) from None
        site.org, site.endpoint = org["organization"], org["endpoint"]

    async def affiliate(self, net: Network) -> None:
        for partner in net.partners:
            try:
                await add_network(self.router, self.registry, hub=net.hub.org, partner=partner.org,
                                  specialties=list(net.specialties), base_url=self.base)
            except EnrolmentError as exc:
                raise DemoError(str(exc)) from None

    async def staff_and_patients(self, site: Site, hubs: list[Site]) -> None:
        """The site's doctors (one per department) and, per hub it asks, one patient with a consent."""
        entries: list[dict[str, Any]] = []
        for code in site.departments:
            doc_id, role_id = str(uuid.uuid4()), str(uuid.uuid4())
            site.roles[code] = role_id
            entries.append(self.put({"resourceType": "Practitioner", "id": doc_id,
                                 "identifier": [{"system": f"{DEMO}/{site.hira}/staff", "value": f"D-{code}"}],
                                 "name": [{"text": self.name()}],
                                 "qualification": [{"identifier": [{
                                     "system": "http://www.hl7korea.or.kr/Identifier/mohw-md-license-id",
                                     "value": f"{100000 + len(site.roles) * 7919 + int(site.hira) % 90000}"}],
                                     "code": {"coding": [{
                                         "system": "http://www.hl7korea.or.kr/CodeSystem/mohw-practitioner-"
                                                   "qualification-types", "code": "01", "display": "의사"}]}}]}))
            entries.append(self.put({"resourceType": "PractitionerRole", "id": role_id, "active": True,
                                 "practitioner": {"reference": f"Practitioner/{doc_id}"},
                                 "organization": {"reference": f"Organization/{site.org}"},
                                 "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                       "practitioner-role", "code": "doctor"}]}],
                                 "specialty": [{"coding": [self.dept(code)]}]}))
        for n, hub in enumerate(hubs, 1):
            patient_id, consent_id = str(uuid.uuid4()), str(uuid.uuid4())
            entries.append(self.put(self.patient(site, patient_id, n)))
            entries.append(self.put(self.consent(site, hub, f"Patient/{patient_id}", consent_id)))
            site.patients[hub.org] = (patient_id, consent_id)
        await self.transaction(site, entries)

    def patient(self, site: Site, patient_id: str, n: int) -> dict[str, Any]:
        return {"resourceType": "Patient", "id": patient_id,
                "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                                "system": f"{DEMO}/{site.hira}/mrn", "value": f"{site.hira[-3:]}-{n:05d}",
                                "assigner": {"reference": f"Organization/{site.org}"}}],
                "name": [{"text": self.name()}], "gender": "female" if self.counter % 2 else "male",
                "birthDate": f"19{40 + self.counter % 30}-0{1 + self.counter % 9}-1{self.counter % 10}"}

    def consent(self, site: Site, hub: Site, patient: str, consent_id: str | None = None, *,
                absolute: bool = False) -> dict[str, Any]:
        """The patient's consent to disclose to ``hub`` for treatment, for a year from today."""
        ref = self.abs if absolute else (lambda r: r)
        consent: dict[str, Any] = {
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
            "patient": {"reference": ref(patient)}, "dateTime": self.now(),
            "performer": [{"reference": ref(patient)}],
            "organization": [{"reference": ref(f"Organization/{site.org}")}],
            "sourceAttachment": {"contentType": "application/pdf", "url": f"{DEMO}/{site.hira}/consents/"
                                 f"{patient.rsplit('/', 1)[-1]}.pdf", "title": "원격협진 동의서"},
            "policy": [{"uri": f"{DEMO}/{site.hira}/policies/remote-consultation"}],
            "provision": {"type": "permit", "period": {"start": self.today(), "end": self.today(365)},
                          "actor": [{"role": {"coding": [{
                              "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                              "code": "IRCP"}]}, "reference": {"reference": ref(f"Organization/{hub.org}")}}],
                          "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                       "code": "TREAT"}]}}
        if consent_id:
            consent["id"] = consent_id
        return consent

    # -- the consult's resources ------------------------------------------------------------------

    def service_request(self, site: Site, hub: Site, code: str, patient: str, consent: str, reason: tuple[str, str],
                        ref: Callable[[str], str]) -> dict[str, Any]:
        self.counter += 1
        return {"resourceType": "ServiceRequest",
                "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                                "system": f"{DEMO}/{site.hira}/consult-requests", "value": f"CR-{self.counter:04d}"}],
                "status": "active", "intent": "order",
                "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "remote-consultation"}]}],
                "priority": "routine",
                "code": {"coding": [self.dept(code)], "text": f"{self.departments.get(code, code)} 원격협진"},
                "subject": {"reference": ref(patient)}, "authoredOn": self.now(),
                "requester": {"reference": ref(f"PractitionerRole/{next(iter(site.roles.values()))}")},
                "performer": [{"reference": ref(f"Organization/{hub.org}")}],
                "reasonCode": [{"coding": [{"system": "http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8",
                                            "code": reason[0]}], "text": reason[1]}],
                "supportingInfo": [{"reference": consent, "type": "Consent"}]}

    def task(self, sr: str, patient: str, requester: str, owner: str) -> dict[str, Any]:
        now = self.now()
        return {"resourceType": "Task", "basedOn": [{"reference": sr}], "status": "requested", "intent": "order",
                "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "consult"}]}, "focus": {"reference": sr},
                "for": {"reference": patient}, "authoredOn": now, "lastModified": now,
                "requester": {"reference": requester}, "owner": {"reference": owner}}

    def communication(self, category: str, sr: str, task: str, patient: str, sender: str, recipient: str,
                      text: str, in_response_to: str | None = None) -> dict[str, Any]:
        comm: dict[str, Any] = {
            "resourceType": "Communication", "basedOn": [{"reference": sr}], "partOf": [{"reference": task}],
            "status": "completed", "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
            "subject": {"reference": patient}, "sent": self.now(), "recipient": [{"reference": recipient}],
            "sender": {"reference": sender}, "payload": [{"contentString": text}]}
        if in_response_to:
            comm["inResponseTo"] = [{"reference": in_response_to}]
        return comm

    def note(self, sr: str, patient: str, author: str, custodian: str, text: str, title: str,
             recommendation: tuple[str, str]) -> dict[str, Any]:
        return {"resourceType": "DocumentReference", "status": "current", "docStatus": "final",
                "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]},
                "category": [{"coding": [{"system": RECOMMENDATION_SYSTEM, "code": recommendation[0],
                                          "display": recommendation[1]}]}],
                "subject": {"reference": patient}, "date": self.now(), "author": [{"reference": author}],
                "custodian": {"reference": custodian},
                "content": [{"attachment": {"contentType": "text/plain", "language": "ko", "title": title,
                                            "data": base64.b64encode(text.encode()).decode()}}],
                "context": {"related": [{"reference": sr}]}}

    async def current(self, site: Site, ref: str) -> dict[str, Any]:
        doc = (await self.call(site, "GET", ref)).json() or {}
        return {k: v for k, v in doc.items() if k != "meta"}

    # -- the consult over REST ----------------------------------------------------------------------

    async def over_rest(self, requester: Site, hub: Site, code: str) -> tuple[str, str]:
        say = self.step("REST")
        patient_id, consent_id = requester.patients[hub.org]
        patient = f"Patient/{patient_id}"
        asking = f"PractitionerRole/{next(iter(requester.roles.values()))}"
        consultant = f"PractitionerRole/{hub.roles[code]}"
        dept = self.departments.get(code, code)
        sr = self.service_request(requester, hub, code, patient, f"Consent/{consent_id}",
                                  ("I63.9", "뇌경색 후 요양 중 인지 저하와 야간 섬망"), lambda r: r)
        sr_ref, task_ref = self.transaction_refs(await self.transaction(requester, [
            {"fullUrl": "urn:uuid:sr", "resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}},
            {"fullUrl": "urn:uuid:task", "request": {"method": "POST", "url": "Task"},
             "resource": self.task("urn:uuid:sr", patient, asking, f"Organization/{hub.org}")}]))
        say(f"{requester.name} asks {hub.name} for a {dept} consult: {sr_ref} and {task_ref} (requested), "
            f"citing Consent/{consent_id}")
        task = await self.current(hub, task_ref)
        task.update(status="accepted", owner={"reference": consultant}, lastModified=self.now())
        await self.call(hub, "PUT", task_ref, task)
        say(f"{hub.name} accepts: {task_ref} accepted, owned by its {dept} doctor ({consultant})")
        task.update(status="in-progress", lastModified=self.now(), businessStatus={"coding": [
            {"system": BUSINESS, "code": "awaiting-information"}]})
        question = self.communication("consult-question", sr_ref, task_ref, patient, consultant, asking,
                                      "최근 2주간 섬망 발생 시각과 복용 중인 수면제 목록을 알려 주십시오.")
        written = await self.transaction(hub, [
            self.put(task, task_ref),
            {"fullUrl": "urn:uuid:q", "resource": question, "request": {"method": "POST", "url": "Communication"}}])
        question_ref = written[1]
        say(f"{hub.name} starts and asks a question: {task_ref} in-progress (awaiting-information), {question_ref}")
        task = await self.current(requester, task_ref)
        task.update(lastModified=self.now(), businessStatus={"coding": [
            {"system": BUSINESS, "code": "information-provided"}]})
        answer = self.communication("consult-answer", sr_ref, task_ref, patient, asking, consultant,
                                    "섬망은 주로 새벽 2-4시에 발생하며, 졸피뎀 10mg을 복용 중입니다.", question_ref)
        written = await self.transaction(requester, [
            {"fullUrl": "urn:uuid:a", "resource": answer, "request": {"method": "POST", "url": "Communication"}},
            self.put(task, task_ref)])
        say(f"{requester.name} answers: {written[0]} (in response to {question_ref}), {task_ref} information-provided")
        note = self.note(sr_ref, patient, consultant, f"Organization/{hub.org}",
                         "수면제를 감량하고 야간 조명을 유지하십시오. 전원 없이 요양병원에서 관리 가능합니다.",
                         f"{dept} 원격협진 소견서", ("manage-locally", "Manage locally"))
        task = await self.current(hub, task_ref)
        task.update(status="completed", lastModified=self.now(), businessStatus={"coding": [
            {"system": BUSINESS, "code": "report-available"}]}, output=[{"type": {"coding": [
                {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]},
                "valueReference": {"reference": "urn:uuid:note"}}])
        written = await self.transaction(hub, [
            {"fullUrl": "urn:uuid:note", "resource": note, "request": {"method": "POST", "url": "DocumentReference"}},
            self.put(task, task_ref)])
        say(f"{hub.name} writes the consult note {written[0]} (recommendation: manage locally) and completes "
            f"{task_ref}")
        request = await self.current(requester, sr_ref)
        request["status"] = "completed"
        await self.call(requester, "PUT", sr_ref, request)
        say(f"{requester.name} reads the note and completes {sr_ref}")
        return sr_ref, task_ref

    @staticmethod
    def transaction_refs(written: list[str]) -> tuple[str, str]:
        return written[0], written[1]

    # -- the consult over messages --------------------------------------------------------------------

    async def over_messages(self, requester: Site, hub: Site, code: str) -> tuple[str, str]:
        """An exchange system's consult: the system names its request and Task itself (ids under absolute
        fullUrls, updates-as-create), and a message refers to what it does not carry by full URL
        (cx-bdl-1)."""
        say = self.step("messages")
        patient_id, _ = requester.patients[hub.org]
        patient = self.abs(f"Patient/{patient_id}")
        asking = self.abs(f"PractitionerRole/{next(iter(requester.roles.values()))}")
        consultant = self.abs(f"PractitionerRole/{hub.roles[code]}")
        dept = self.departments.get(code, code)
        sr_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
        sr_url, task_url = self.abs(f"ServiceRequest/{sr_id}"), self.abs(f"Task/{task_id}")
        consent = self.consent(requester, hub, f"Patient/{patient_id}", absolute=True)
        sr = {**self.service_request(requester, hub, code, f"Patient/{patient_id}", "urn:uuid:consent",
                                     ("S72.00", "대퇴골 경부 골절 수술 후 보행 재활 정체"), self.abs), "id": sr_id}
        task = {**self.task(sr_url, patient, asking, self.abs(f"Organization/{hub.org}")), "id": task_id}
        await self.message(requester, hub, "consult-request", sr_url, [
            {"fullUrl": "urn:uuid:consent", "resource": consent},
            {"fullUrl": sr_url, "resource": sr},
            {"fullUrl": task_url, "resource": task}])
        say(f"{requester.name} sends consult-request to {hub.name} ({dept}): ServiceRequest/{sr_id}, Task/{task_id} "
            "requested, with the patient's Consent")
        task.update(status="accepted", owner={"reference": consultant}, lastModified=self.now())
        await self.message(hub, requester, "consult-status-update", task_url, [{"fullUrl": task_url, "resource": task}])
        say(f"{hub.name} sends consult-status-update: Task/{task_id} accepted")
        task.update(status="in-progress", lastModified=self.now(), businessStatus={"coding": [
            {"system": BUSINESS, "code": "awaiting-information"}]})
        q_id = str(uuid.uuid4())
        q_url = self.abs(f"Communication/{q_id}")
        question = {**self.communication("consult-question", sr_url, task_url, patient, consultant, asking,
                                         "수술 후 체중 부하 허용 범위와 최근 X선 판독을 보내 주십시오."), "id": q_id}
        await self.message(hub, requester, "consult-communication", q_url, [
            {"fullUrl": q_url, "resource": question}, {"fullUrl": task_url, "resource": task}])
        say(f"{hub.name} sends consult-communication: the question Communication/{q_id}; Task/{task_id} in-progress "
            "(awaiting-information)")
        task.update(lastModified=self.now(), businessStatus={"coding": [
            {"system": BUSINESS, "code": "information-provided"}]})
        a_id = str(uuid.uuid4())
        a_url = self.abs(f"Communication/{a_id}")
        answer = {**self.communication("consult-answer", sr_url, task_url, patient, asking, consultant,
                                       "부분 체중 부하(50%) 허용, 6주 X선에서 골유합 진행 중입니다.", q_url),
                  "id": a_id}
        await self.message(requester, hub, "consult-communication", a_url, [
            {"fullUrl": a_url, "resource": answer}, {"fullUrl": task_url, "resource": task}])
        say(f"{requester.name} sends consult-communication: the answer Communication/{a_id}; Task/{task_id} "
            "information-provided")
        n_id = str(uuid.uuid4())
        n_url = self.abs(f"DocumentReference/{n_id}")
        note = {**self.note(sr_url, patient, consultant, self.abs(f"Organization/{hub.org}"),
                            "보행 보조기 사용 하 점진적 체중 부하를 늘리고 4주 후 재평가하십시오.",
                            f"{dept} 원격협진 소견서", ("manage-locally", "Manage locally")), "id": n_id}
        task.update(status="completed", lastModified=self.now(), businessStatus={"coding": [
            {"system": BUSINESS, "code": "report-available"}]}, output=[{"type": {"coding": [
                {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]},
                "valueReference": {"reference": n_url}}])
        await self.message(hub, requester, "consult-report", task_url, [
            {"fullUrl": task_url, "resource": task}, {"fullUrl": n_url, "resource": note}])
        say(f"{hub.name} sends consult-report: Task/{task_id} completed with the consult note DocumentReference/{n_id} "
            "(recommendation: manage locally)")
        request = await self.current(requester, f"ServiceRequest/{sr_id}")
        request["status"] = "completed"
        await self.call(requester, "PUT", f"ServiceRequest/{sr_id}", request)
        say(f"{requester.name} completes ServiceRequest/{sr_id} (a PUT: no consult event carries the request's "
            "completion)")
        return f"ServiceRequest/{sr_id}", f"Task/{task_id}"

    def step(self, how: str) -> Callable[[str], None]:
        n = 0

        def say(text: str) -> None:
            nonlocal n
            n += 1
            self.out(f"  [{how} {n}] {text}")

        return say


def absolute(resource: dict[str, Any], local: set[str], base: str) -> dict[str, Any]:
    """``resource`` with each relative reference (``Type/id``) that is not in ``local`` made a full URL."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (f"{base}/{v}" if k == "reference" and isinstance(v, str) and _RELATIVE.match(v)
                        and v not in local else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    out: dict[str, Any] = walk(resource)
    return out


async def run_demo(settings: Settings, base_url: str, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Seed the pilot's networks and walk the two consults; returns what a caller may check (ids)."""
    started = time.perf_counter()
    settings = dataclasses.replace(settings, auth=True, consult_workflow=True, consult_profiles=True,
                                   consult_networks=True)
    svc = build_services(settings, load_definitions(settings))
    router = build_router(svc)
    await svc.open()
    try:
        await load_stored(svc)
        registry = Registry(svc.store)
        if await registry.institutions(instant(svc.clock.now())):
            raise DemoError("the store already holds registered institutions: run the demo on a fresh --data-dir")
        demo = Demo(router, registry, base_url.rstrip("/"), out)
        networks = pilot()
        sites = list({id(s): s for net in networks for s in (net.hub, *net.partners)}.values())
        out(f"Seeding {len(sites)} institutions in three networks (store: {settings.resolved_store_url})")
        for site in sites:
            await demo.enrol(site)
        for net in networks:
            await demo.affiliate(net)
        hubs_of: dict[int, list[Site]] = {}
        for net in networks:
            for partner in net.partners:
                hubs_of.setdefault(id(partner), []).append(net.hub)
        for site in sites:
            await demo.staff_and_patients(site, hubs_of.get(id(site), []))
        for net in networks[:3]:
            out(f"  {net.hub.name}: {len(net.partners)} partners ({', '.join(p.name for p in net.partners)}); "
                f"departments {', '.join(demo.departments.get(c, c) for c in net.specialties)}")
        for region, net in zip(networks[2].partners, networks[3:], strict=True):
            out(f"    {region.name}: hub of {', '.join(p.name for p in net.partners)}")
        out(f"  {sum(len(n.partners) for n in networks)} network affiliations, "
            f"{sum(len(s.roles) for s in sites)} doctors with their PractitionerRoles, "
            f"{sum(len(s.patients) for s in sites)} patients each with a consent naming their hub")
        hanbit, nursing = networks[0].hub, networks[0].partners[0]
        neulbom, rehab = networks[1].hub, networks[1].partners[0]
        out(f"Consult 1 over REST (transaction Bundles and PUTs), {nursing.name} → {hanbit.name}:")
        rest = await demo.over_rest(nursing, hanbit, "02")
        out(f"Consult 2 over FHIR messages ($process-message), {rehab.name} → {neulbom.name}:")
        messages = await demo.over_messages(rehab, neulbom, "21")
        other = networks[2].partners[0]
        foreign = other.patients[networks[2].hub.org][0]
        probe = await _status(router, demo.actor(hanbit), base_url, f"Patient/{foreign}")
        own = await _status(router, demo.actor(hanbit), base_url, f"Patient/{nursing.patients[hanbit.org][0]}")
        out(f"Isolation: {hanbit.name} reads its consult's patient: {own}; a patient of {other.name} (another "
            f"hub's network): {probe}")
        period = f"{demo.today()}/{demo.today()}"
        resp = await router.dispatch(FhirRequest("GET", "$consult-stats", [("period", period)], base_url=base_url))
        stats = resp.json() or {}
        out(f"$consult-stats?period={period} (as the system: every institution's consults):")
        names = {f"Organization/{s.org}": s.name for s in sites}
        for g in groups_of(stats):
            accept, note = g["turnaround-accept"], g["turnaround-note"]
            recs = ", ".join(f"{k} {v}" for k, v in sorted(g["recommendation"].items())) or "none"
            out(f"  {names.get(g['hub'], g['hub'])} ← {names.get(g['partner'], g['partner'])}, "
                f"{demo.departments.get(g.get('department') or '', '?')}: requested {g['requested']}, accepted "
                f"{g['accepted']}, rejected {g['rejected']}, completed {g['completed']}, cancelled {g['cancelled']}; "
                f"request→accept median {_h(accept.get('median'))}, p90 {_h(accept.get('p90'))}; request→note "
                f"median {_h(note.get('median'))}; recommendations: {recs}; transfers avoided "
                f"{g['transfers-avoided']}; follow-ups due {g['follow-ups-due']}, overdue {g['follow-ups-overdue']}")
        out(f"Done in {time.perf_counter() - started:.1f} s.")
        return {"institutions": {s.name: s.org for s in sites}, "rest": rest, "messages": messages,
                "stats": stats}
    finally:
        await svc.close()


async def _status(router: Router, actor: Actor, base_url: str, ref: str) -> str:
    try:
        resp = await router.dispatch(FhirRequest("GET", ref, base_url=base_url, actor=actor))
    except FhirError as err:
        return f"{err.status} ({err.diagnostics})"
    return f"{resp.status}"


def _h(value: Any) -> str:
    return "-" if value is None else f"{value} h"
