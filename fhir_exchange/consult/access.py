"""Consent decides access: the grants a consult gives, recomputed whenever the consult changes.

For each consult (one ServiceRequest) the server keeps one set of grants (basis ``consult:<id>``),
replaced as a whole in the unit of work of every write that touches the consult, so a change of the
Consent, the Task or the request is reflected at once (:func:`grants`):

- the **consultant's institution** (the owner of each live Task, or the performer) may read the
  patient and the consult's graph (the ServiceRequest, its Tasks, the Consents it cites, its
  Communications and consult notes, what ``supportingInfo`` and ``Task.input`` reference, and the
  resources those reference in turn) while a cited Consent permits it (active, same patient,
  purpose TREAT, the consultant as recipient, within its period: the grant ends with the period),
  while the Task is live (rejected, cancelled, failed or entered in error: no access; completed: a
  read-only grace period from the last completion of its Tasks, a follow-up's included, which does not
  run while the institution owns an open Task of the consult), and except what a deny provision of the
  Consent withholds;
- the **requester's institution** may read what the consultant wrote in its consult (questions,
  answers, the consult note and its attachments), with no end.

A Consent that stops permitting (withdrawn: inactive or entered in error) cancels the open consults
that rely on it (:func:`withdraw`): the Task is cancelled with a statusReason, the ServiceRequest
revoked, each change a write of the server on its own account, with its Provenance.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.consult import model
from fhir_exchange.consult.consent import denied, micros, to_instant
from fhir_exchange.consult.workflow import Reader, Workflow
from fhir_exchange.store.port import Grant

_US_DAY = 86_400_000_000


def _min(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


async def graph(r: Reader, sr: dict[str, Any],
                tasks: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, set[str]]]:
    """(the consult's own resources, what they reference, the references reached only one level further
    mapped to what they were reached through): ``Type/id`` references."""
    sr_id = str(sr.get("id"))
    own = [f"ServiceRequest/{sr_id}"]
    own += [f"Task/{t['id']}" for t in tasks]
    own += [f"Consent/{c}" for c in model.consents_of(sr)]
    communications = await r.find("Communication", [("based-on", f"ServiceRequest/{sr_id}")])
    notes = [n for n in await r.find("DocumentReference", [("related", f"ServiceRequest/{sr_id}")]) if model.is_note(n)]
    own += [f"Communication/{c['id']}" for c in communications]
    own += [f"DocumentReference/{n['id']}" for n in notes]
    related: list[str] = []
    subject = model.reference(sr.get("subject"))
    if subject:
        related.append(subject)
    supporting = [ref for ref in model.references(sr.get("supportingInfo")) if not ref.startswith("Consent/")]
    for task in tasks:
        for item in task.get("input") or []:
            if isinstance(item, dict):
                supporting += model.references(item.get("valueReference"))
    for doc in (*communications, *notes):
        supporting += [ref for ref in model.outgoing(doc) if ref.startswith(("Binary/", "DocumentReference/",
                                                                            "Observation/", "DiagnosticReport/",
                                                                            "Media/", "ImagingStudy/"))]
    related += supporting
    first = set(related) | set(own)
    via: dict[str, set[str]] = {}
    for ref in list(dict.fromkeys(supporting)):  # one level further: a report's results, a note's Binary
        target = await r.get(ref)
        if target is not None:
            for x in model.outgoing(target):
                if not x.startswith(("Organization/", "Practitioner", "Location/", "Endpoint/")) and x not in first:
                    via.setdefault(x, set()).add(ref)
                    related.append(x)
    return list(dict.fromkeys(own)), [x for x in dict.fromkeys(related) if x not in own], via


async def grants(workflow: Workflow, r: Reader, sr_id: str, now: str) -> list[Grant]:
    sr = await r.get(f"ServiceRequest/{sr_id}")
    if sr is None or not model.is_request(sr) or model.status_code(sr) in ("revoked", "entered-in-error"):
        return []
    requester = await r.requester(sr_id)
    tasks = [t for t in await r.find("Task", [("focus", f"ServiceRequest/{sr_id}")]) if model.task_kind(t)]
    own, related, via = await graph(r, sr, tasks)
    out: list[Grant] = []
    performer = next(iter(model.references(sr.get("performer"))), None)
    consultants: dict[str, str | None] = {}  # institution -> party reference
    consult_tasks = [t for t in tasks if model.task_kind(t) == "consult"]
    for task in consult_tasks:
        if model.status_code(task) not in model.LIVE_TASK:
            continue
        owner_ref = model.reference(task.get("owner"))
        inst = await r.institution(owner_ref)
        if inst and inst != requester:
            consultants.setdefault(inst, owner_ref)
    if not consult_tasks:
        inst = await r.institution(performer)
        if inst and inst != requester:
            consultants[inst] = performer
    # The grace runs from the last completion of the consult's Tasks (a follow-up's included), and only for
    # an institution that owns no open Task of the consult (a follow-up still to do is live work).
    completed = [t for t in tasks if model.status_code(t) == "completed"]
    working = {await r.institution(model.reference(t.get("owner"))) for t in tasks
               if model.status_code(t) in model.OPEN_TASK}
    grace_end: str | None = None
    if completed:
        done = max(_completed_at(t) for t in completed)
        span = micros(done)
        if span is not None:
            grace_end = to_instant(span[0] + workflow.settings.grace_days * _US_DAY)
    for inst, party in consultants.items():
        decision = await workflow.consent_decision(r, sr, inst, party, now)
        if not decision.permitted:
            continue
        until = _min(decision.until, None if inst in working else grace_end)
        consents = [c for c in [await r.get(f"Consent/{cid}") for cid in model.consents_of(sr)] if c is not None]
        # What a deny provision withholds, it withholds with what is reached only through it (a withheld
        # DocumentReference's Binary); such a resource is shown while any way to it is.
        shown: dict[str, str | None] = {}  # reference -> the instant it is withheld from (None: never)
        for ref in (*own, *related):
            target = await r.get(ref)
            if target is None:
                continue
            withheld, from_ = False, None
            for consent in consents:
                w, f = denied(consent, target, now)
                withheld = withheld or w
                from_ = _min(from_, f)
            if ref in via and not withheld:
                parents = [p for p in via[ref] if p in shown]
                if not parents:
                    withheld = True
                elif all(shown[p] is not None for p in parents):
                    from_ = _min(from_, max(str(shown[p]) for p in parents))
            if withheld:
                continue
            shown[ref] = from_
            if await r.owner(ref) == inst:
                continue  # its own
            type, id = ref.split("/", 1)
            out.append(Grant(inst, type, id, _min(until, from_)))
    if requester is not None:
        for ref in own:
            if ref.startswith(("Communication/", "DocumentReference/", "Task/")):
                owner = await r.owner(ref)
                if owner is not None and owner != requester:
                    type, id = ref.split("/", 1)
                    out.append(Grant(requester, type, id))
                    doc = await r.get(ref)
                    for att in model.outgoing(doc or {}):
                        if att.startswith("Binary/") and await r.owner(att) not in (None, requester):
                            out.append(Grant(requester, "Binary", att.split("/", 1)[1]))
    return out


def _completed_at(task: dict[str, Any]) -> str:
    """When the server recorded the completed Task (``meta.lastUpdated``, which the server owns), not
    ``Task.lastModified``: that is the client's say, and would let the grace end at once or never."""
    return str((task.get("meta") or {}).get("lastUpdated") or "")


async def withdrawn_requests(r: Reader, consent_id: str) -> list[dict[str, Any]]:
    """The open consult requests that rely on a Consent that no longer permits anything."""
    consent = await r.get(f"Consent/{consent_id}")
    if consent is not None and consent.get("status") == "active":
        return []
    requests = await r.find("ServiceRequest", [("supporting-info", f"Consent/{consent_id}")])
    return [sr for sr in requests if model.is_request(sr) and model.status_code(sr) in ("draft", "active")]


def cancelled(task: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**{k: v for k, v in task.items() if k != "meta"}, "status": "cancelled",
            "statusReason": {"text": reason}}


def revoked(sr: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in sr.items() if k != "meta"}, "status": "revoked"}
