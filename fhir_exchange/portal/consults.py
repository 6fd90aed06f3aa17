"""What portal pages show, read through the router as the signed-in user: the worklist (consults the
user's institution sent or was asked for), one consult with everything the user may see of it, the
patients and the network. Visibility decides what comes back: a consult of another institution is
simply absent, a document a consent withholds is shown as withheld.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.consult import model
from fhir_exchange.consult.profiles import TASK_CODE_SYSTEM
from fhir_exchange.portal.fhir import Fhir
from fhir_exchange.portal.resources import DEPARTMENTS

OPEN = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
STARTED = frozenset({"in-progress", "on-hold"})


@dataclass(frozen=True, slots=True)
class Me:
    """The signed-in user as pages need it."""

    username: str
    institution: str  # Organization id
    role: str  # PractitionerRole id
    display: str

    @property
    def role_ref(self) -> str:
        return f"PractitionerRole/{self.role}"

    @property
    def org_ref(self) -> str:
        return f"Organization/{self.institution}"


class Directory:
    """Names of institutions and practitioners (the shared directory), read once per page."""

    def __init__(self, fhir: Fhir) -> None:
        self.fhir = fhir

    async def institution(self, ref: str | None) -> str | None:
        """The Organization id an Organization, PractitionerRole or HealthcareService reference stands for."""
        if not ref:
            return None
        if ref.startswith("Organization/"):
            return ref.split("/", 1)[1]
        party = await self.fhir.read(ref)
        key = {"PractitionerRole": "organization", "HealthcareService": "providedBy"}.get(ref.split("/", 1)[0])
        org = model.reference(party.get(key)) if party and key else None
        return org.split("/", 1)[1] if org and org.startswith("Organization/") else None

    async def name(self, ref: str | None) -> str:
        """How a party is shown: an institution's name, a practitioner's name (with the institution)."""
        if not ref:
            return "-"
        doc = await self.fhir.read(ref)
        if doc is None:
            return ref
        if doc.get("resourceType") == "Organization":
            return str(doc.get("name") or ref)
        if doc.get("resourceType") == "PractitionerRole":
            person = await self.fhir.read(model.reference(doc.get("practitioner")))
            org = await self.fhir.read(model.reference(doc.get("organization")))
            who = human_name(person) if person else ref
            return f"{who} ({org.get('name')})" if org and org.get("name") else who
        if doc.get("resourceType") in ("Practitioner", "Patient"):
            return human_name(doc)
        return ref

    async def person(self, ref: str | None) -> str:
        """A PractitionerRole's practitioner's name alone."""
        doc = await self.fhir.read(ref) if ref else None
        if doc and doc.get("resourceType") == "PractitionerRole":
            person = await self.fhir.read(model.reference(doc.get("practitioner")))
            return human_name(person) if person else str(ref)
        return await self.name(ref)


def human_name(resource: dict[str, Any] | None) -> str:
    for name in (resource or {}).get("name") or []:
        if isinstance(name, dict):
            if name.get("text"):
                return str(name["text"])
            parts = [*((name.get("family") and [name["family"]]) or []), *(name.get("given") or [])]
            if parts:
                return " ".join(str(p) for p in parts)
    return str((resource or {}).get("id") or "-")


def mrn(patient: dict[str, Any] | None) -> str:
    for ident in (patient or {}).get("identifier") or []:
        if any(c.get("code") == "MR" for c in model.codings(ident.get("type"))):
            return str(ident.get("value") or "")
    return ""


def department(request: dict[str, Any] | None) -> tuple[str, str]:
    """(code, display) of a request's HIRA department."""
    for coding in model.codings((request or {}).get("code")):
        if coding.get("system") == DEPARTMENTS:
            return str(coding.get("code") or ""), str(coding.get("display") or "")
    return "", str(((request or {}).get("code") or {}).get("text") or "")


def text_of(attachment: dict[str, Any]) -> str:
    """The text an attachment carries inline (a consult note)."""
    try:
        return base64.b64decode(attachment.get("data") or "").decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def recommendation(note: dict[str, Any] | None) -> str | None:
    return model.recommendation(note) if note else None


def due_date(task: dict[str, Any]) -> str | None:
    return model.period((task.get("restriction") or {}).get("period"))[1]


# -- the worklist ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    task: dict[str, Any]
    request: dict[str, Any] | None
    patient: dict[str, Any] | None
    side: str  # incoming (my institution is asked) | outgoing (my institution asked)
    kind: str  # consult | follow-up
    hub: str  # names
    partner: str
    owner: str

    @property
    def request_id(self) -> str:
        return str((self.request or {}).get("id") or (model.request_of(self.task) or ""))

    @property
    def status(self) -> str:
        return str(self.task.get("status") or "")

    @property
    def business(self) -> str:
        return model.business_status(self.task) or ""

    @property
    def priority(self) -> str:
        return str(self.task.get("priority") or (self.request or {}).get("priority") or "routine")

    @property
    def department(self) -> tuple[str, str]:
        return department(self.request)

    @property
    def authored(self) -> str:
        return str(self.task.get("authoredOn") or "")

    @property
    def due(self) -> str | None:
        return due_date(self.task)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN


async def worklist(fhir: Fhir, me: Me, *, limit: int = 500) -> list[Row]:
    """Consult and follow-up Tasks the user may see, newest first, each on the side the user's
    institution takes in it."""
    found = await fhir.search("Task", [("code", f"{TASK_CODE_SYSTEM}|consult,{TASK_CODE_SYSTEM}|follow-up"),
                                       ("_include", "Task:focus"), ("_include", "Task:subject"),
                                       ("_sort", "-authored-on")], limit=limit)
    directory = Directory(fhir)
    rows: list[Row] = []
    for task in found.matches:
        request = found.included.get(model.reference(task.get("focus")) or "")
        patient = found.included.get(model.reference(task.get("for")) or "")
        owner_ref = model.reference(task.get("owner"))
        owner = await directory.institution(owner_ref)
        requester = await directory.institution(model.reference((request or task).get("requester")))
        if owner == me.institution:
            side = "incoming"
        elif requester == me.institution:
            side = "outgoing"
        else:
            continue
        rows.append(Row(task, request, patient, side, model.task_kind(task) or "consult",
                        await directory.name(f"Organization/{owner}" if owner else None),
                        await directory.name(f"Organization/{requester}" if requester else None),
                        await directory.person(owner_ref)))
    return rows


# -- one consult ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Document:
    ref: str
    resource: dict[str, Any] | None  # None: not visible (withheld by the consent, or gone)
    title: str = ""
    content_type: str = ""
    url: str = ""  # the portal's link to the file
    size: int = 0


@dataclass(slots=True)
class Exchange:
    """A question and its answers."""

    question: dict[str, Any]
    sender: str
    answers: list[tuple[dict[str, Any], str]] = field(default_factory=list)


@dataclass(slots=True)
class Event:
    at: str
    kind: str  # i18n key of what happened
    detail: str = ""
    who: str = ""


@dataclass(slots=True)
class Consult:
    request: dict[str, Any]
    patient: dict[str, Any] | None
    side: str  # requester | consultant | observer
    task: dict[str, Any] | None  # the consult Task
    follow_ups: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    exchanges: list[Exchange]
    notes: list[tuple[dict[str, Any], str]]  # (note, author name), newest last
    documents: list[Document]
    timeline: list[Event]
    requester_name: str
    requester_org: str | None
    consultant_org: str | None
    consultant_name: str
    owner_name: str
    colleagues: list[tuple[str, str]]  # (PractitionerRole id, name) of the consultant's institution

    @property
    def id(self) -> str:
        return str(self.request.get("id"))

    @property
    def open_question(self) -> dict[str, Any] | None:
        for ex in reversed(self.exchanges):
            if not ex.answers:
                return ex.question
        return None

    @property
    def latest_note(self) -> dict[str, Any] | None:
        return self.notes[-1][0] if self.notes else None

    def tasks(self) -> list[dict[str, Any]]:
        return [t for t in [self.task, *self.follow_ups] if t is not None]

    def find_task(self, task_id: str) -> dict[str, Any] | None:
        return next((t for t in self.tasks() if str(t.get("id")) == task_id), None)


async def load_consult(fhir: Fhir, me: Me, request_id: str, *, portal_base: str) -> Consult | None:
    """Everything the user may see of one consult; None when its request is not visible to the user."""
    if not _plain_id(request_id):
        return None
    request = await fhir.read(f"ServiceRequest/{request_id}")
    if request is None or not model.is_request(request):
        return None
    directory = Directory(fhir)
    ref = f"ServiceRequest/{request_id}"
    tasks = (await fhir.search("Task", [("focus", ref), ("_sort", "authored-on")])).matches
    consult_task = next((t for t in tasks if model.task_kind(t) == "consult"), None)
    follow_ups = [t for t in tasks if model.task_kind(t) == "follow-up"]
    requester_ref = model.reference(request.get("requester"))
    requester_org = await directory.institution(requester_ref)
    owner_ref = model.reference((consult_task or {}).get("owner")) or next(
        iter(model.references(request.get("performer"))), None)
    consultant_org = await directory.institution(owner_ref)
    side = "requester" if requester_org == me.institution else (
        "consultant" if consultant_org == me.institution else "observer")
    patient = await fhir.read(model.reference(request.get("subject")))
    consents = [c for c in [await fhir.read(f"Consent/{cid}") for cid in model.consents_of(request)] if c]
    comms = (await fhir.search("Communication", [("based-on", ref), ("_sort", "sent")])).matches
    exchanges: list[Exchange] = []
    by_id: dict[str, Exchange] = {}
    for comm in comms:
        sender = await directory.person(model.reference(comm.get("sender")))
        if model.is_answer(comm):
            replied = next((by_id[r.split("/", 1)[1]] for r in model.references(comm.get("inResponseTo"))
                            if r.split("/", 1)[1] in by_id), None)
            if replied is not None:
                replied.answers.append((comm, sender))
                continue
        ex = Exchange(comm, sender)
        exchanges.append(ex)
        by_id[str(comm.get("id"))] = ex
    notes_found = (await fhir.search("DocumentReference", [("related", ref)])).matches
    notes = sorted((n for n in notes_found if model.is_note(n) and n.get("status") == "current"),
                   key=lambda n: str(n.get("date") or ""))
    authored_notes = [(n, await directory.person(next(iter(model.references(n.get("author"))), None)))
                      for n in notes]
    documents: list[Document] = []
    for doc_ref in model.references(request.get("supportingInfo")):
        if doc_ref.startswith("Consent/"):
            continue
        doc = await fhir.read(doc_ref)
        documents.append(document(doc_ref, doc, portal_base))
    colleagues: list[tuple[str, str]] = []
    if side == "consultant":
        roles = await fhir.search("PractitionerRole", [("organization", me.org_ref), ("active", "true"),
                                                        ("_include", "PractitionerRole:practitioner")], limit=200)
        for role in roles.matches:
            person = roles.included.get(model.reference(role.get("practitioner")) or "")
            colleagues.append((str(role.get("id")), human_name(person) if person else str(role.get("id"))))
        colleagues.sort(key=lambda c: c[1])
    consult = Consult(request, patient, side, consult_task, follow_ups, consents, exchanges, authored_notes,
                      documents, [], await directory.name(requester_ref), requester_org, consultant_org,
                      await directory.name(f"Organization/{consultant_org}" if consultant_org else owner_ref),
                      await directory.person(owner_ref), colleagues)
    consult.timeline = await timeline(fhir, directory, consult)
    return consult


def document(ref: str, doc: dict[str, Any] | None, portal_base: str) -> Document:
    if doc is None:
        return Document(ref, None)
    content = next((c.get("attachment") for c in doc.get("content") or [] if isinstance(c, dict)), None) or {}
    url = str(content.get("url") or "")
    link = f"{portal_base}/files/{url}" if url.startswith("Binary/") and _plain_id(url.split("/", 1)[1]) else ""
    return Document(ref, doc, str(content.get("title") or doc.get("description") or ref),
                    str(content.get("contentType") or ""), link, int(content.get("size") or 0))


async def timeline(fhir: Fhir, directory: Directory, consult: Consult) -> list[Event]:
    """What happened to the consult, oldest first: the request, each change of a Task's status, business
    status or owner (from its versions), the questions and answers, the notes, the follow-ups."""
    events = [Event(str(consult.request.get("authoredOn") or ""), "event.requested", "", consult.requester_name)]
    for task in consult.tasks():
        kind = model.task_kind(task) or "consult"
        before: tuple[str, str, str] | None = None
        for version in await fhir.history(f"Task/{task['id']}"):
            at = str((version.get("meta") or {}).get("lastUpdated") or "")
            state = (str(version.get("status") or ""), model.business_status(version) or "",
                     model.reference(version.get("owner")) or "")
            if before is None:
                if kind == "follow-up":
                    events.append(Event(str(version.get("authoredOn") or at), "event.follow-up",
                                        due_date(version) or "", consult.requester_name))
            else:
                if state[0] != before[0]:
                    reason = str((version.get("statusReason") or {}).get("text") or "")
                    events.append(Event(at, f"status.{state[0]}", reason,
                                        await directory.person(state[2]) if state[0] == "accepted" else ""))
                if state[1] != before[1] and state[1]:
                    events.append(Event(at, f"business.{state[1]}"))
                if state[2] != before[2] and state[0] == before[0]:
                    events.append(Event(at, "event.assigned", "", await directory.person(state[2])))
            before = state
    for ex in consult.exchanges:
        events.append(Event(str(ex.question.get("sent") or ""), "event.question", "", ex.sender))
        for answer, sender in ex.answers:
            events.append(Event(str(answer.get("sent") or ""), "event.answer", "", sender))
    for note, author in consult.notes:
        events.append(Event(str(note.get("date") or ""), "event.note", recommendation(note) or "", author))
    if consult.request.get("status") in ("completed", "revoked"):
        meta = consult.request.get("meta") or {}
        events.append(Event(str(meta.get("lastUpdated") or ""), f"request.{consult.request['status']}"))
    return sorted(events, key=lambda e: e.at)


def _plain_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-." for c in value) and value.isascii()


# -- patients and the network ---------------------------------------------------------------------


async def hubs(fhir: Fhir, me: Me, departments: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """The hubs the user's institution may ask (its active network affiliations as a partner):
    (Organization id, name, department codes offered; every department when the affiliation names none)."""
    found = await fhir.search("OrganizationAffiliation", [("participating-organization", me.org_ref),
                                                          ("active", "true"),
                                                          ("_include", "OrganizationAffiliation:primary-organization")])
    offered: dict[str, set[str]] = {}
    for aff in found.matches:
        hub = model.reference(aff.get("organization"))
        if not hub or not hub.startswith("Organization/"):
            continue
        codes = {str(c["code"]) for c in model.codings(aff.get("specialty"))
                 if c.get("system") == DEPARTMENTS and c.get("code")}
        offered.setdefault(hub.split("/", 1)[1], set()).update(codes or set(departments))
    out = []
    for org, codes in offered.items():
        doc = await fhir.read(f"Organization/{org}")
        out.append((org, str((doc or {}).get("name") or org), sorted(c for c in codes if c in departments)))
    return sorted(out, key=lambda h: h[1])


def consent_state(consent: dict[str, Any], today: str) -> str:
    """active | expired | future | inactive: how a Consent stands today (for the patient page)."""
    if consent.get("status") != "active":
        return "inactive"
    start, end = model.period((consent.get("provision") or {}).get("period"))
    if end and end[:10] < today:
        return "expired"
    if start and start[:10] > today:
        return "future"
    return "active"
