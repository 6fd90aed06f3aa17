"""The consult workflow as hooks of the one write path, and its periodic sweep.

:func:`guard` runs :class:`~fhir_exchange.consult.workflow.Workflow` on every write (it must come
before the isolation guard: it vouches for the consultant's changes to the requester's Task) and
queues, for the end of the unit of work, the deferred checks, the recomputation of each touched
consult's grants and, for a Consent that changed, the cancellation of the consults a withdrawal
leaves without consent. :class:`Sweep` does what time alone changes: consents whose period ended
cancel their open consults, and follow-ups past their due date become overdue.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.consult import access, model
from fhir_exchange.consult.consent import in_period
from fhir_exchange.consult.workflow import Workflow
from fhir_exchange.interactions.hooks import Change, Guard, WriteUnit
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.services import Services
from fhir_exchange.security.actor import SYSTEM
from fhir_exchange.security.provenance import server_provenance

log = logging.getLogger(__name__)

WITHDRAWN = "The patient's consent was withdrawn"
EXPIRED = "The patient's consent period ended"
REVOKED = "The requester revoked the consult request"


def guard(workflow: Workflow, svc: Services) -> Guard:
    async def consult_guard(change: Change, unit: WriteUnit) -> None:
        if not workflow.concerns(change.type, change.before_resource(), change.after):
            return
        now = instant(svc.clock.now())
        verdict = await workflow.check(unit.uow, change.actor, change.type, change.id, change.before_resource(),
                                       change.after, now)
        if verdict.authorized_by is not None:
            change.authorized_by = verdict.authorized_by
        for key, check in verdict.deferred.items():
            unit.before_commit(key, check)
        for sr_id in verdict.revoked:
            unit.before_commit(f"revoked:{sr_id}", partial(request_revoked, workflow, unit, sr_id))
        for cid in verdict.consents:
            withdrawn = cid in verdict.withdrawn
            unit.before_commit(f"{'withdrawn' if withdrawn else 'consent'}:{cid}",
                               partial(consent_changed, workflow, unit, cid, now, withdrawn))
        for sr_id in verdict.consults:
            unit.before_commit(f"grants:{sr_id}", partial(regrant, workflow, unit, sr_id, now))

    return consult_guard


async def regrant(workflow: Workflow, unit: WriteUnit, sr_id: str, now: str) -> None:
    r = workflow.reader(unit.uow)
    await unit.uow.replace_grants(f"consult:{sr_id}", await access.grants(workflow, r, sr_id, now))


async def consent_changed(workflow: Workflow, unit: WriteUnit, consent_id: str, now: str, withdrawn: bool) -> None:
    """A Consent changed: withdrawn (it was active and is no longer), its consults are cancelled; in every
    case they are decided again. A Consent written inactive withdraws nothing: a request citing it in the
    same transaction is refused (cw-consent-active), not created and cancelled."""
    r = workflow.reader(unit.uow)
    for sr in await access.withdrawn_requests(r, consent_id) if withdrawn else []:
        await cancel(workflow, unit, sr, WITHDRAWN, f"Consent/{consent_id}")
    for sr in await r.find("ServiceRequest", [("supporting-info", f"Consent/{consent_id}")]):
        unit.before_commit(f"grants:{sr['id']}", partial(regrant, workflow, unit, str(sr["id"]), now))


async def request_revoked(workflow: Workflow, unit: WriteUnit, sr_id: str) -> None:
    """The requester revoked its request before work began: its open Tasks are cancelled."""
    r = workflow.reader(unit.uow)
    for task in await r.find("Task", [("focus", f"ServiceRequest/{sr_id}")]):
        if model.task_kind(task) and model.status_code(task) in model.OPEN_TASK:
            v = await unit.write_as_system("Task", str(task["id"]), access.cancelled(task, REVOKED), method="PUT")
            await unit.record("Provenance", server_provenance(v, REVOKED, f"ServiceRequest/{sr_id}"))


async def cancel(workflow: Workflow, unit: WriteUnit, sr: dict[str, Any], reason: str, because: str) -> None:
    """Cancel the open Tasks of a consult and revoke its request, as the server, with Provenance."""
    r = workflow.reader(unit.uow)
    sr_id = str(sr["id"])
    for task in await r.find("Task", [("focus", f"ServiceRequest/{sr_id}")]):
        if model.task_kind(task) and model.status_code(task) in model.OPEN_TASK:
            if model.status_code(task) in ("in-progress", "on-hold"):
                changed = {**{k: v for k, v in task.items() if k != "meta"}, "status": "failed",
                           "statusReason": {"text": reason}}
            else:
                changed = access.cancelled(task, reason)
            v = await unit.write_as_system("Task", str(task["id"]), changed, method="PUT")
            await unit.record("Provenance", server_provenance(v, reason, because))
    v = await unit.write_as_system("ServiceRequest", sr_id, access.revoked(sr), method="PUT")
    await unit.record("Provenance", server_provenance(v, reason, because))


class Sweep:
    """What time alone changes, run every few seconds by the app (as the server, on its own account)."""

    def __init__(self, svc: Services, workflow: Workflow) -> None:
        self.svc = svc
        self.workflow = workflow

    async def run(self) -> int:
        """Cancel consults whose consent period ended; mark follow-ups past due. Returns the changes."""
        now = instant(self.svc.clock.now())
        changes = 0
        repo = Repository(self.svc, SYSTEM)
        async with repo.unit() as w:
            r = self.workflow.reader(w.uow)
            for consent in await r.find("Consent", [("status", "active"), ("period", f"lt{now}")]):
                end = model.period((consent.get("provision") or {}).get("period"))[1]
                if end is None:
                    continue
                for sr in await r.find("ServiceRequest", [("supporting-info", f"Consent/{consent['id']}")]):
                    if not model.is_request(sr) or model.status_code(sr) not in ("draft", "active"):
                        continue
                    decision = await self.workflow.consent_decision(
                        r, sr, await r.institution(next(iter(model.references(sr.get("performer"))), None)),
                        next(iter(model.references(sr.get("performer"))), None), now)
                    if not decision.permitted:
                        await cancel(self.workflow, w, sr, EXPIRED, f"Consent/{consent['id']}")
                        changes += 1
            for task in await r.find("Task", [("status", "requested,received,accepted,in-progress,on-hold")]):
                if model.task_kind(task) != "follow-up" or model.business_status(task) == "overdue":
                    continue
                due = model.period((task.get("restriction") or {}).get("period"))[1]
                if due is not None and not in_period(None, due, now):
                    overdue = {**{k: v for k, v in task.items() if k != "meta"}, "businessStatus": {"coding": [
                        {"system": model.BUSINESS_STATUS_SYSTEM, "code": "overdue"}], "text": "overdue"}}
                    await w.write_as_system("Task", str(task["id"]), overdue, method="PUT")
                    changes += 1
        return changes

