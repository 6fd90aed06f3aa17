"""What portal forms do: each action builds the consult IG's resources and writes them through the
router as the signed-in user (one transaction Bundle when several resources change together, each
update conditional on the version the page showed, so two people acting at once cannot overwrite
each other). A rule the workflow enforces is not checked again here: the router's answer (403/409/422
naming the rule) is shown on the page.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_exchange.consult import model
from fhir_exchange.portal import resources as build
from fhir_exchange.portal.consults import STARTED, Consult, Me, consent_state
from fhir_exchange.portal.fhir import Fhir, version_of

PDF, PNG, JPEG = "application/pdf", "image/png", "image/jpeg"
ALLOWED = (PDF, PNG, JPEG)
KCD = re.compile(r"[A-Z][0-9]{2}([.][0-9A-Z]{1,3})?")


class ActionError(ValueError):
    """A form that cannot be acted on as filled in: ``key`` is the message's i18n key."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    content_type: str  # what the bytes are (sniffed), one of ALLOWED
    data: bytes


def sniff(data: bytes) -> str | None:
    """The type of a file by its first bytes: only PDF, PNG and JPEG are taken."""
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    return None


def upload(filename: str, data: bytes, limit: int) -> Upload:
    if not data:
        raise ActionError("error.file-empty", name=filename)
    if len(data) > limit:
        raise ActionError("error.file-too-large", name=filename, limit=limit // (1024 * 1024))
    kind = sniff(data)
    if kind is None:
        raise ActionError("error.file-type", name=filename)
    return Upload(filename.replace("\\", "/").rsplit("/", 1)[-1][:200] or "file", kind, data)


def _date(value: str, key: str) -> str:
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise ActionError(key) from None


def _required(value: str, key: str, limit: int = 4000) -> str:
    text = value.strip()
    if not text:
        raise ActionError(key)
    if len(text) > limit:
        raise ActionError("error.too-long", limit=limit)
    return text


# -- patients and consents ------------------------------------------------------------------------


async def register_patient(fhir: Fhir, me: Me, *, name: str, mrn: str, gender: str, birth_date: str) -> str:
    name = _required(name, "error.name-required", 200)
    number = mrn.strip() or f"P-{secrets.token_hex(4).upper()}"
    if gender not in build.GENDERS:
        raise ActionError("error.gender")
    born = _date(birth_date, "error.birth-date")  # the consult IG's Patient has a birth date
    existing = await fhir.search("Patient", [("identifier", f"{build.namespace(me.institution, 'mrn')}|{number}")],
                                 limit=1)
    if existing.matches:
        raise ActionError("error.mrn-taken", mrn=number)
    patient_id = build.new_id()
    await fhir.put(build.patient(patient_id, me.institution, mrn=number, name=name, gender=gender, birth_date=born))
    return patient_id


async def record_consent(fhir: Fhir, me: Me, *, patient_id: str, recipient: str, start: str, end: str,
                         signed: str, form: Upload | None, now: str, policy: str,
                         withhold: tuple[str, ...] = ()) -> str:
    if await fhir.read(f"Patient/{patient_id}") is None:
        raise ActionError("error.not-found")
    if not recipient:
        raise ActionError("error.recipient")
    if form is None:
        raise ActionError("error.consent-form")
    first, last = _date(start, "error.period"), _date(end, "error.period")
    if last < first:
        raise ActionError("error.period")
    signed_on = _date(signed, "error.signed") if signed.strip() else now[:10]
    binary_id, consent_id = build.new_id(), build.new_id()
    source = build.attachment(binary_id, form.content_type, form.data, form.filename, now)
    await fhir.transaction(
        (build.binary(binary_id, form.content_type, form.data, patient_id), None),
        (build.consent(consent_id, me.institution, patient_id=patient_id, recipient=recipient, start=first,
                       end=last, signed=signed_on, source=source, policy=policy, withhold=withhold), None))
    return consent_id


async def withdraw_consent(fhir: Fhir, me: Me, consent_id: str) -> None:
    consent = await fhir.read(f"Consent/{consent_id}")
    if consent is None:
        raise ActionError("error.not-found")
    await fhir.put({**build.without_meta(consent), "status": "inactive"}, version=version_of(consent))


# -- the requester --------------------------------------------------------------------------------


async def usable_consent(fhir: Fhir, patient_id: str, hub: str, today: str) -> dict[str, Any] | None:
    """The patient's active Consent naming the hub as recipient, within its period today."""
    found = await fhir.search("Consent", [("patient", f"Patient/{patient_id}"), ("status", "active")])
    for consent in sorted(found.matches, key=lambda c: str(c.get("dateTime") or ""), reverse=True):
        if consent_state(consent, today) == "active" and f"Organization/{hub}" in model.consent_recipients(consent):
            return consent
    return None


async def create_consult(fhir: Fhir, me: Me, *, patient_id: str, hub: str, department: str, department_display: str,
                         priority: str, reason: str, reason_code: str, question: str, files: list[Upload],
                         now: str) -> str:
    if await fhir.read(f"Patient/{patient_id}") is None:
        raise ActionError("error.not-found")
    if priority not in build.PRIORITIES:
        raise ActionError("error.priority")
    reason = _required(reason, "error.reason-required", 1000)
    question = _required(question, "error.question-required")
    code = reason_code.strip().upper() or None
    if code is not None and not _kcd(code):
        raise ActionError("error.kcd")
    consent = await usable_consent(fhir, patient_id, hub, now[:10])
    if consent is None:
        raise ActionError("error.no-consent")
    request_id, task_id = build.new_id(), build.new_id()
    writes: list[tuple[dict[str, Any], str | None]] = []
    documents = []
    for f in files:
        binary_id, doc_id = build.new_id(), build.new_id()
        writes.append((build.binary(binary_id, f.content_type, f.data, patient_id), None))
        writes.append((build.supporting_document(doc_id, patient_id=patient_id, author=me.role_ref,
                                                 content=build.attachment(binary_id, f.content_type, f.data,
                                                                          f.filename, now), now=now), None))
        documents.append(doc_id)
    number = f"CR-{now[:10].replace('-', '')}-{secrets.token_hex(3).upper()}"
    writes.append((build.service_request(request_id, me.institution, patient_id=patient_id,
                                         consent_id=str(consent["id"]), requester=me.role_ref, hub=hub,
                                         department=department, department_display=department_display,
                                         priority=priority, reason=reason, reason_code=code, question=question,
                                         documents=documents, now=now, number=number), None))
    writes.append((build.task(task_id, request_id=request_id, patient_id=patient_id, requester=me.role_ref,
                              owner=f"Organization/{hub}", priority=priority, now=now), None))
    await fhir.transaction(*writes)
    return request_id


def _kcd(code: str) -> bool:
    return KCD.fullmatch(code) is not None  # cx-sr-3


async def answer(fhir: Fhir, me: Me, consult: Consult, *, question_id: str, text: str, now: str) -> None:
    text = _required(text, "error.answer-required")
    question = next((ex.question for ex in consult.exchanges if str(ex.question.get("id")) == question_id), None)
    if question is None or consult.task is None:
        raise ActionError("error.not-found")
    task = consult.find_task(str(model.id_of(next(iter(model.references(question.get("partOf"))), None), "Task")
                                 or consult.task["id"])) or consult.task
    sender = next(iter(model.references(question.get("sender"))), None) or model.reference(task.get("owner")) or ""
    writes: list[tuple[dict[str, Any], str | None]] = [(build.communication(
        build.new_id(), request_id=consult.id, task_id=str(task["id"]), patient_id=_patient_id(consult),
        sender=me.role_ref, recipient=sender, text=text, now=now, answers=question_id), None)]
    if model.business_status(task) == "awaiting-information":
        writes.append(({**build.without_meta(task), "businessStatus": build.business("information-provided"),
                        "lastModified": now}, version_of(task)))
    await fhir.transaction(*writes)


async def revoke(fhir: Fhir, me: Me, consult: Consult) -> None:
    await fhir.put({**build.without_meta(consult.request), "status": "revoked"}, version=version_of(consult.request))


async def close(fhir: Fhir, me: Me, consult: Consult) -> None:
    await fhir.put({**build.without_meta(consult.request), "status": "completed"}, version=version_of(consult.request))


async def follow_up(fhir: Fhir, me: Me, consult: Consult, *, due: str, note: str, now: str) -> str:
    if consult.task is None:
        raise ActionError("error.not-found")
    end = _date(due, "error.due")
    if end < now[:10]:
        raise ActionError("error.due")
    task_id = build.new_id()
    owner = model.reference(consult.task.get("owner")) or f"Organization/{consult.consultant_org}"
    await fhir.put(build.task(task_id, request_id=consult.id, patient_id=_patient_id(consult),
                              requester=me.role_ref, owner=owner,
                              priority=str(consult.request.get("priority") or "routine"), now=now, kind="follow-up",
                              part_of=str(consult.task["id"]), due=(now[:10], end), note=note.strip() or None))
    return task_id


# -- the consultant -------------------------------------------------------------------------------


def _task(consult: Consult, task_id: str) -> dict[str, Any]:
    task = consult.find_task(task_id)
    if task is None:
        raise ActionError("error.not-found")
    return task


def _patient_id(consult: Consult) -> str:
    return str(model.id_of(model.reference(consult.request.get("subject")), "Patient") or "")


def _moved(task: dict[str, Any], now: str, **changes: Any) -> dict[str, Any]:
    return {**build.without_meta(task), **changes, "lastModified": now}


async def accept(fhir: Fhir, me: Me, consult: Consult, *, task_id: str, assignee: str, now: str) -> None:
    task = _task(consult, task_id)
    owner = _colleague(consult, me, assignee)
    await fhir.put(_moved(task, now, status="accepted", owner={"reference": owner},
                          businessStatus=build.business("triage")), version=version_of(task))


async def reject(fhir: Fhir, me: Me, consult: Consult, *, task_id: str, reason: str, now: str) -> None:
    task = _task(consult, task_id)
    reason = _required(reason, "error.reason-required", 1000)
    changed = _moved(task, now, status="rejected", statusReason={"text": reason})
    changed.pop("businessStatus", None)
    await fhir.put(changed, version=version_of(task))


async def assign(fhir: Fhir, me: Me, consult: Consult, *, task_id: str, assignee: str, now: str) -> None:
    task = _task(consult, task_id)
    await fhir.put(_moved(task, now, owner={"reference": _colleague(consult, me, assignee)}), version=version_of(task))


def _colleague(consult: Consult, me: Me, role_id: str) -> str:
    if not role_id or role_id == me.role:
        return me.role_ref
    if role_id not in {c[0] for c in consult.colleagues}:
        raise ActionError("error.assignee")
    return f"PractitionerRole/{role_id}"


async def _started(fhir: Fhir, task: dict[str, Any], now: str) -> dict[str, Any]:
    """The Task in progress (an accepted Task is started first: the lifecycle goes through in-progress)."""
    if task.get("status") in ("received", "requested"):
        raise ActionError("error.accept-first")
    if task.get("status") == "accepted":
        return await fhir.put(_moved(task, now, status="in-progress", businessStatus=build.business("under-review")),
                              version=version_of(task))
    return task


async def ask(fhir: Fhir, me: Me, consult: Consult, *, task_id: str, text: str, now: str) -> None:
    text = _required(text, "error.question-required")
    task = await _started(fhir, _task(consult, task_id), now)
    recipient = model.reference(consult.request.get("requester")) or ""
    question = build.communication(build.new_id(), request_id=consult.id, task_id=str(task["id"]),
                                   patient_id=_patient_id(consult), sender=me.role_ref, recipient=recipient,
                                   text=text, now=now)
    changed = _moved(task, now, businessStatus=build.business("awaiting-information"))
    if changed.get("status") == "on-hold":
        changed["status"] = "in-progress"
        changed.pop("statusReason", None)
    await fhir.transaction((question, None), (changed, version_of(task)))


async def write_note(fhir: Fhir, me: Me, consult: Consult, *, task_id: str, text: str, recommendation: str,
                     signed: bool, language: str, title: str, now: str) -> str:
    text = _required(text, "error.note-required", 20000)
    if recommendation not in build.RECOMMENDATIONS:
        raise ActionError("error.recommendation")
    if not signed:
        raise ActionError("error.sign")
    task = await _started(fhir, _task(consult, task_id), now)
    if task.get("status") not in STARTED:
        raise ActionError("error.not-open")
    note_id = build.new_id()
    note = build.consult_note(note_id, me.institution, request_id=consult.id, patient_id=_patient_id(consult),
                              author=me.role_ref, text=text, title=title, recommendation=recommendation,
                              language=language, now=now)
    completed = _moved(task, now, status="completed", businessStatus=build.business("report-available"),
                       output=build.note_output(note_id))
    completed.pop("statusReason", None)
    await fhir.transaction((note, None), (completed, version_of(task)))
    return note_id
