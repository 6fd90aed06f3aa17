"""The consult workflow's rules, applied to every write of a consult resource whatever its path (REST,
batch and transaction entries, message entries, the portal): who may write what, which status changes
are legal, and the facts across resources that must hold. Rules are written once, here, as
:meth:`Workflow.check` (immediate: who the actor is and what changes) and the deferred checks it asks
for (run when the unit of work is about to commit, so that a transaction may write the Consent, the
ServiceRequest and the Task in any order). A violation is a :class:`FhirError` naming the rule
(``cw-*``): 403 for who may, 409 for a state or a fact across resources.

Reads go through a :class:`Reader` on the unit of work (the system's view: a rule must see what the
actor cannot).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.consult import lifecycle, model
from fhir_exchange.consult.consent import Decision, decide, in_period
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError, Issue
from fhir_exchange.fhir import jsonio
from fhir_exchange.search.parse import parse
from fhir_exchange.security.actor import Actor
from fhir_exchange.store.port import UnitOfWork


def refused(rule: str, diagnostics: str, expression: str = "", *, who: bool = False) -> FhirError:
    """A rule broken: 403 when the actor may not do it, 409 when the state or the facts forbid it."""
    category = Category.FORBIDDEN if who else Category.CONFLICT
    issue = Issue("error", "forbidden" if who else "business-rule", f"{rule}: {diagnostics}",
                  (expression,) if expression else (), rule)
    return FhirError(category, f"{rule}: {diagnostics}", issues=[issue])


class Reader:
    """Reads of the consult graph inside one unit of work (sees its writes), parsed and cached."""

    def __init__(self, uow: UnitOfWork, definitions: Definitions) -> None:
        self.uow = uow
        self.definitions = definitions
        self._cache: dict[str, dict[str, Any] | None] = {}
        self.owners: dict[str, str | None] = {}

    async def get(self, ref: str | None) -> dict[str, Any] | None:
        if not ref or "/" not in ref:
            return None
        if ref not in self._cache:
            type, id = ref.split("/", 1)
            v = await self.uow.read(type, id)
            self._cache[ref] = None if v is None or v.deleted else jsonio.loads(v.body)
            self.owners[ref] = None if v is None else v.owner
        return self._cache[ref]

    async def owner(self, ref: str) -> str | None:
        await self.get(ref)
        return self.owners.get(ref)

    async def find(self, type: str, params: list[tuple[str, str]], count: int = 500) -> list[dict[str, Any]]:
        query = parse(self.definitions, type, [*params, ("_count", str(count)), ("_total", "none")],
                      default_count=count, max_count=count)
        result = await self.uow.search(query)
        out = []
        for v in result.matches:
            doc = jsonio.loads(v.body)
            ref = f"{v.type}/{v.id}"
            self._cache[ref] = doc
            self.owners[ref] = v.owner
            out.append(doc)
        return out

    async def requester(self, sr_id: str | None) -> str | None:
        """The requesting institution of a consult: the one that owns its ServiceRequest, or (written by
        the system, without authentication) the organization of its requester."""
        if not sr_id:
            return None
        owner = await self.owner(f"ServiceRequest/{sr_id}")
        if owner is not None:
            return owner
        sr = await self.get(f"ServiceRequest/{sr_id}")
        return await self.institution(model.reference((sr or {}).get("requester")))

    async def institution(self, ref: str | None) -> str | None:
        """The Organization id a party reference stands for (the organization of a PractitionerRole,
        the provider of a HealthcareService); None when it names no Organization the server holds."""
        if not ref:
            return None
        if ref.startswith("Organization/"):
            org: str | None = ref.split("/", 1)[1]
        else:
            party = await self.get(ref)
            key = {"PractitionerRole": "organization", "HealthcareService": "providedBy", "Endpoint":
                   "managingOrganization"}.get(ref.split("/", 1)[0])
            org = model.id_of(model.reference(party.get(key)), "Organization") if party is not None and key else None
        return org if org and await self.get(f"Organization/{org}") is not None else None


@dataclass(slots=True)
class Verdict:
    """What the immediate check decided: who vouches for a write to another institution's resource,
    the deferred checks (by key: each runs once per unit of work), the consults whose access must be
    decided again, and the Consents that changed."""

    authorized_by: str | None = None
    deferred: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    consults: set[str] = field(default_factory=set)  # ServiceRequest ids
    consents: set[str] = field(default_factory=set)  # Consent ids
    withdrawn: set[str] = field(default_factory=set)  # Consent ids that just stopped being active
    revoked: set[str] = field(default_factory=set)  # ServiceRequest ids the requester just revoked


@dataclass(slots=True)
class Settings:
    grace_days: int = 30  # the consultant reads the completed consult this long
    networks: bool = True  # a consult is requested only from a partner to its hub


class Workflow:
    def __init__(self, definitions: Definitions, settings: Settings | None = None) -> None:
        self.definitions = definitions
        self.settings = settings or Settings()

    def reader(self, uow: UnitOfWork) -> Reader:
        return Reader(uow, self.definitions)

    @staticmethod
    def concerns(type: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
        """Whether a write touches the consult workflow at all (most writes do not)."""
        docs = [d for d in (before, after) if d is not None]
        if type == "ServiceRequest":
            return any(model.is_request(d) for d in docs)
        if type == "Task":
            return any(model.task_kind(d) is not None for d in docs)
        if type == "Communication":
            return any(model.is_communication(d) for d in docs)
        if type == "DocumentReference":
            return any(model.is_note(d) for d in docs)
        return type == "Consent"

    async def check(self, uow: UnitOfWork, actor: Actor, type: str, id: str, before: dict[str, Any] | None,
                    after: dict[str, Any] | None, now: str) -> Verdict:
        """The rules of one write (``after`` None: a delete) that can be decided now."""
        verdict = Verdict()
        doc = after if after is not None else before
        if doc is None:
            return verdict
        r = self.reader(uow)
        if type == "ServiceRequest" and (model.is_request(doc) or (before and model.is_request(before))):
            await self._request(r, actor, id, before, after, now, verdict)
        elif type == "Task" and model.task_kind(doc) is not None:
            await self._task(r, actor, id, before, after, now, verdict)
        elif type == "Consent":
            await self._consent(r, actor, id, before, after, now, verdict)
        elif type == "Communication" and model.is_communication(doc):
            await self._communication(r, actor, id, before, after, now, verdict)
        elif type == "DocumentReference" and model.is_note(doc):
            await self._note(r, actor, id, before, after, now, verdict)
        return verdict

    # -- ServiceRequest --------------------------------------------------------------------------

    async def _request(self, r: Reader, actor: Actor, id: str, before: dict[str, Any] | None,
                       after: dict[str, Any] | None, now: str, verdict: Verdict) -> None:
        if after is None:
            raise refused("cw-no-delete", "a consult ServiceRequest is revoked (status revoked), never deleted")
        was, becomes = model.status_code(before), model.status_code(after)
        if not lifecycle.legal(lifecycle.REQUEST_TRANSITIONS, was, becomes):
            raise refused("cw-transition", f"a consult ServiceRequest does not go from {was or 'nothing'} to "
                          f"{becomes}", "ServiceRequest.status")
        if before is None and not actor.system:
            requester_ref = model.reference(after.get("requester"))
            if await r.institution(requester_ref) is None:  # its PractitionerRole may come later in a transaction
                verdict.deferred[f"requester:{id}"] = lambda: self.check_requester_role(
                    self.reader(r.uow), actor, requester_ref)
            else:
                await self.check_requester_role(r, actor, requester_ref)
        created = before is None or not model.is_request(before)
        verdict.deferred[f"request:{id}"] = lambda: self.check_request(self.reader(r.uow), actor, id, now,
                                                                       created=created)
        if becomes == "revoked" and was != "revoked":
            tasks = await r.find("Task", [("focus", f"ServiceRequest/{id}")])
            started = [t for t in tasks if model.task_kind(t) is not None
                       and model.status_code(t) in ("in-progress", "on-hold")]
            if started:
                raise refused("cw-request-revoke", "the consultant has started: the requester asks for an abort "
                              "(Task.businessStatus abort-requested) instead of revoking the request",
                              "ServiceRequest.status")
            verdict.revoked.add(id)
        verdict.consults.add(id)

    async def check_requester_role(self, r: Reader, actor: Actor, requester_ref: str | None) -> None:
        if await r.institution(requester_ref) != actor.institution:
            raise refused("cw-requester-role", "the ServiceRequest's requester must be a PractitionerRole (or "
                          "the Organization) of the institution that writes it", "ServiceRequest.requester",
                          who=True)

    async def check_request(self, r: Reader, actor: Actor, id: str, now: str, *, created: bool = True) -> None:
        """The facts a consult request rests on, against the unit of work's state (the network rule when
        it is requested: an affiliation that ends later does not stop the consult from completing)."""
        sr = await r.get(f"ServiceRequest/{id}")
        if sr is None or not model.is_request(sr):
            return
        status = model.status_code(sr)
        if status in ("revoked", lifecycle.ERROR):
            return
        performer = next(iter(model.references(sr.get("performer"))), None)
        consultant = await r.institution(performer)
        if consultant is None:
            raise refused("cw-performer", f"the performer {performer} is not an institution of the network (an "
                          "Organization, or a PractitionerRole or HealthcareService of one)",
                          "ServiceRequest.performer")
        requester = await r.requester(id)
        if requester is not None and consultant == requester:
            raise refused("cw-performer", "an institution does not request a consult from itself",
                          "ServiceRequest.performer")
        consents = model.consents_of(sr)
        if not consents:
            raise refused("cw-consent-exists", "the ServiceRequest cites no Consent in supportingInfo",
                          "ServiceRequest.supportingInfo")
        decision = await self.consent_decision(r, sr, consultant, performer, now)
        if not decision.permitted and status in ("draft", "active"):
            raise refused(decision.rule, decision.reason, "ServiceRequest.supportingInfo")
        if status == "completed":
            tasks = await r.find("Task", [("focus", f"ServiceRequest/{id}")])
            if not any(model.status_code(t) == "completed" for t in tasks if model.task_kind(t) == "consult"):
                raise refused("cw-request-completed", "a consult ServiceRequest is completed once its Task is",
                              "ServiceRequest.status")
        if created and self.settings.networks and not actor.system and requester is not None:
            await self.check_network(r, requester, consultant, sr, now)

    async def consent_decision(self, r: Reader, sr: dict[str, Any], consultant: str | None,
                               performer: str | None, now: str) -> Decision:
        """The best decision among the Consents the request cites (a permit wins). The consultant is named
        by its Organization or by one of its PractitionerRoles or HealthcareServices, whichever the
        request's performer or the Task's owner is."""
        recipients = {f"Organization/{consultant}"} if consultant else set()
        if performer:
            recipients.add(performer)
        patient = model.reference(sr.get("subject"))
        last = Decision(False, "the ServiceRequest cites no Consent", "cw-consent-exists")
        for cid in model.consents_of(sr):
            consent = await r.get(f"Consent/{cid}")
            named = {ref for ref in model.consent_recipients(consent or {})
                     if consultant and await r.institution(ref) == consultant}
            decision = decide(consent, patient=patient, recipients=recipients | named, now=now)
            if consent is None:
                decision = Decision(False, f"Consent/{cid} does not exist", "cw-consent-exists")
            elif decision.permitted:
                return decision
            last = decision
        return last

    async def check_network(self, r: Reader, partner: str, hub: str, sr: dict[str, Any], now: str) -> None:
        affiliations = await r.find("OrganizationAffiliation", [("primary-organization", f"Organization/{hub}"),
                                                                ("participating-organization",
                                                                 f"Organization/{partner}")])
        departments = {(c.get("system"), c.get("code")) for c in model.codings(sr.get("code"))}
        limited = False
        for aff in affiliations:
            if aff.get("active") is False:
                continue
            # The hub's own affiliation (or the server's): anyone may write a directory entry naming a hub.
            if r.owners.get(f"OrganizationAffiliation/{aff.get('id')}") not in (hub, None):
                continue
            start, end = model.period(aff.get("period"))
            if not in_period(start, end, now):
                continue
            offered = {(c.get("system"), c.get("code")) for c in model.codings(aff.get("specialty"))}
            if not offered or offered & departments:
                return  # one affiliation of the pair offering the department is enough
            limited = True
        if limited:
            raise refused("cw-network", f"Organization/{hub} does not offer this department to "
                          f"Organization/{partner} (OrganizationAffiliation.specialty)", "ServiceRequest.code")
        raise refused("cw-network", f"Organization/{partner} is not a partner of Organization/{hub}: a consult "
                      "is requested from a hub the institution is affiliated with (OrganizationAffiliation)",
                      "ServiceRequest.performer")

    # -- Task ------------------------------------------------------------------------------------

    async def _task(self, r: Reader, actor: Actor, id: str, before: dict[str, Any] | None,
                    after: dict[str, Any] | None, now: str, verdict: Verdict) -> None:
        if after is None:
            raise refused("cw-no-delete", "a consult Task is cancelled or rejected, never deleted")
        was, becomes = model.status_code(before), model.status_code(after)
        if not lifecycle.legal(lifecycle.TASK_TRANSITIONS, was, becomes):
            raise refused("cw-transition", f"a consult Task does not go from {was or 'nothing'} to {becomes}",
                          "Task.status")
        sr_id = model.request_of(after) or (model.request_of(before) if before else None)
        if not actor.system:
            requester = await r.requester(sr_id) if sr_id else None
            if before is None:
                if sr_id and await r.get(f"ServiceRequest/{sr_id}") is None:
                    # The ServiceRequest may come later in the same transaction: decided before the commit.
                    verdict.deferred[f"task-creator:{id}"] = lambda: self.check_task_creator(
                        self.reader(r.uow), actor, sr_id)
                else:
                    await self.check_task_creator(r, actor, sr_id)
            else:
                consultant = await r.institution(model.reference(before.get("owner")))
                changed = lifecycle.changed_fields(before, after)
                if changed & lifecycle.FIXED_TASK_FIELDS:
                    raise refused("cw-task-fields", f"{', '.join(sorted(changed & lifecycle.FIXED_TASK_FIELDS))} of "
                                  "a consult Task never change", "Task")
                if actor.institution == consultant and actor.institution != requester:
                    if "input" in changed:
                        raise refused("cw-task-fields", "Task.input is the requester's to change", "Task.input",
                                      who=True)
                    if was != becomes and becomes not in lifecycle.CONSULTANT_SETS:
                        raise refused("cw-task-status-party", f"the consultant does not set the Task {becomes}",
                                      "Task.status", who=True)
                    if "owner" in changed:
                        new_owner = await r.institution(model.reference(after.get("owner")))
                        if new_owner != actor.institution:
                            raise refused("cw-task-owner", "the consultant assigns the Task within its own "
                                          "institution", "Task.owner", who=True)
                    verdict.authorized_by = "consult workflow: the consultant's institution moves the Task"
                elif actor.institution == requester:
                    extra = changed - lifecycle.REQUESTER_TASK_FIELDS
                    if extra:
                        raise refused("cw-task-fields", f"the requester changes only owner, businessStatus and "
                                      f"input of the Task, not {', '.join(sorted(extra))}", "Task", who=True)
                    if was != becomes and becomes not in lifecycle.REQUESTER_SETS:
                        raise refused("cw-task-status-party", f"only the consultant sets the Task {becomes}",
                                      "Task.status", who=True)
                    if "owner" in changed and was not in ("draft", "requested", "received"):
                        raise refused("cw-task-owner", "the requester reassigns the Task only before it is "
                                      "accepted", "Task.owner", who=True)
                    business = model.business_status(after)
                    if "businessStatus" in changed and business not in lifecycle.REQUESTER_BUSINESS \
                            and business is not None:
                        raise refused("cw-task-status-party", f"the requester does not set businessStatus {business}",
                                      "Task.businessStatus", who=True)
        verdict.deferred[f"task:{id}"] = lambda: self.check_task(self.reader(r.uow), id, now)
        if sr_id:
            verdict.consults.add(sr_id)

    async def check_task_creator(self, r: Reader, actor: Actor, sr_id: str | None) -> None:
        if sr_id and await r.get(f"ServiceRequest/{sr_id}") is None:
            return  # check_task refuses a Task whose ServiceRequest the server does not hold (cw-task-focus)
        if await r.requester(sr_id) != actor.institution:
            raise refused("cw-task-requester", "the consult Task is created by the institution that requested the "
                          "consult", "Task.focus", who=True)

    async def check_task(self, r: Reader, id: str, now: str) -> None:
        task = await r.get(f"Task/{id}")
        if task is None or model.task_kind(task) is None:
            return
        status = model.status_code(task)
        sr_id = model.request_of(task)
        sr = await r.get(f"ServiceRequest/{sr_id}") if sr_id else None
        if sr is None or not model.is_request(sr):
            raise refused("cw-task-focus", f"the Task's focus ServiceRequest/{sr_id} is not a consult request the "
                          "server holds", "Task.focus")
        kind = model.task_kind(task)
        # A follow-up after discharge or transfer may come once the first consult closed its request.
        open_request = ("active", "completed") if kind == "follow-up" else ("active",)
        if status == "requested" and model.status_code(sr) not in open_request:
            raise refused("cw-task-focus", f"a consult is requested on an active ServiceRequest, not a "
                          f"{model.status_code(sr)} one", "Task.focus")
        if kind == "follow-up":
            parents = [p for p in model.references(task.get("partOf")) if p.startswith("Task/")]
            parent = await r.get(parents[0]) if len(parents) == 1 else None
            if parent is None or model.task_kind(parent) != "consult" or model.request_of(parent) != sr_id:
                raise refused("cw-follow-up", "a follow-up is partOf the first consult's Task of the same "
                              "ServiceRequest", "Task.partOf")
        if model.reference(task.get("for")) != model.reference(sr.get("subject")):
            raise refused("cw-task-subject", "Task.for is the ServiceRequest's subject", "Task.for")
        if model.reference(task.get("requester")) != model.reference(sr.get("requester")):
            raise refused("cw-task-requester", "Task.requester is the ServiceRequest's requester", "Task.requester")
        owner_ref = model.reference(task.get("owner"))
        consultant = await r.institution(owner_ref)
        requester = await r.requester(sr_id)
        if status not in ("cancelled", "rejected", "failed", lifecycle.ERROR):
            if consultant is None or consultant == requester:
                raise refused("cw-task-owner", f"the Task's owner {owner_ref} is not another institution of the "
                              "network", "Task.owner")
            decision = await self.consent_decision(r, sr, consultant, owner_ref, now)
            if not decision.permitted and status not in ("completed",):
                raise refused(decision.rule, f"the Task's owner is not covered: {decision.reason}", "Task.owner")
        if status == "completed":
            notes = [ref for o in task.get("output") or [] if isinstance(o, dict)
                     for ref in model.references(o.get("valueReference"))]
            if not notes:
                raise refused("cw-output-note", "a completed Task's output references the consult note",
                              "Task.output")
            for ref in notes:
                note = await r.get(ref)
                if note is None or not model.is_note(note):
                    raise refused("cw-output-note", f"{ref} is not a consult note (a DocumentReference of type LOINC "
                                  "11488-4) the server holds", "Task.output")
                if model.request_of(note) != sr_id:
                    raise refused("cw-output-note", f"{ref} is the note of another consult (context.related)",
                                  "Task.output")

    # -- Consent ---------------------------------------------------------------------------------

    async def _consent(self, r: Reader, actor: Actor, id: str, before: dict[str, Any] | None,
                       after: dict[str, Any] | None, now: str, verdict: Verdict) -> None:
        if after is not None and before is None and not actor.system:
            organization = model.id_of(model.reference(next(iter(after.get("organization") or []), None)),
                                       "Organization")
            if organization is not None and organization != actor.institution:
                raise refused("cw-consent-organization", "a Consent is recorded by the institution it names "
                              "(Consent.organization)", "Consent.organization", who=True)
        verdict.consents.add(id)  # the requests citing it are decided again
        if model.status_code(before) == "active" and model.status_code(after) != "active":
            verdict.withdrawn.add(id)  # withdrawn: the consults relying on it are cancelled

    # -- Communication and the consult note -------------------------------------------------------

    async def _communication(self, r: Reader, actor: Actor, id: str, before: dict[str, Any] | None,
                             after: dict[str, Any] | None, now: str, verdict: Verdict) -> None:
        if after is None:
            raise refused("cw-no-delete", "a consult Communication is entered-in-error, never deleted")
        sr_id = model.request_of(after)
        if before is None:
            if not actor.system:
                sender_ref = model.reference(after.get("sender"))
                if sr_id and await r.get(f"ServiceRequest/{sr_id}") is None:
                    # The ServiceRequest may come later in the same transaction: decided before the commit.
                    verdict.deferred[f"communication-writer:{id}"] = lambda: self.check_communication_writer(
                        self.reader(r.uow), actor, sr_id, sender_ref)
                else:
                    await self.check_communication_writer(r, actor, sr_id, sender_ref)
            verdict.deferred[f"communication:{id}"] = lambda: self.check_communication(self.reader(r.uow), id)
        if sr_id:
            verdict.consults.add(sr_id)

    async def check_communication_writer(self, r: Reader, actor: Actor, sr_id: str | None,
                                         sender_ref: str | None) -> None:
        if actor.institution not in await self._parties(r, sr_id):
            raise refused("cw-comm-party", "only the two parties of the consult write its Communications",
                          "Communication.basedOn", who=True)
        if await r.institution(sender_ref) != actor.institution:
            raise refused("cw-comm-party", "the sender is of the institution that writes the Communication",
                          "Communication.sender", who=True)

    async def check_communication(self, r: Reader, id: str) -> None:
        comm = await r.get(f"Communication/{id}")
        if comm is None:
            return
        sr_id = model.request_of(comm)
        sr = await r.get(f"ServiceRequest/{sr_id}") if sr_id else None
        if sr is None or not model.is_request(sr):
            raise refused("cw-comm-request", f"Communication.basedOn ServiceRequest/{sr_id} is not a consult "
                          "request the server holds", "Communication.basedOn")
        if model.reference(comm.get("subject")) != model.reference(sr.get("subject")):
            raise refused("cw-comm-subject", "the Communication is about the consult's patient",
                          "Communication.subject")
        parties = await self._parties(r, sr_id)
        sender = await r.institution(model.reference(comm.get("sender")))
        recipients = {await r.institution(ref) for ref in model.references(comm.get("recipient"))}
        if sender not in parties or not recipients or not recipients <= parties - {sender}:
            raise refused("cw-comm-party", "a consult Communication goes from one party of the consult to the "
                          "other", "Communication.recipient")
        for ref in model.references(comm.get("inResponseTo")):
            asked = await r.get(ref)
            if asked is None or not ref.startswith("Communication/") or model.request_of(asked) != sr_id:
                raise refused("cw-comm-reply", f"inResponseTo {ref} is not a Communication of the same consult",
                              "Communication.inResponseTo")

    async def _note(self, r: Reader, actor: Actor, id: str, before: dict[str, Any] | None,
                    after: dict[str, Any] | None, now: str, verdict: Verdict) -> None:
        doc = after if after is not None else before
        assert doc is not None
        sr_id = model.request_of(doc)
        if after is None and sr_id:
            raise refused("cw-no-delete", "a consult note is superseded or entered-in-error, never deleted")
        if before is None and not actor.system and sr_id:
            if await r.get(f"ServiceRequest/{sr_id}") is None:
                # The ServiceRequest may come later in the same transaction: decided before the commit.
                verdict.deferred[f"note-writer:{id}"] = lambda: self.check_note_writer(self.reader(r.uow), actor, sr_id)
            else:
                await self.check_note_writer(r, actor, sr_id)
        if after is not None and sr_id:
            verdict.deferred[f"note:{id}"] = lambda: self.check_note(self.reader(r.uow), id)
            verdict.consults.add(sr_id)

    async def check_note_writer(self, r: Reader, actor: Actor, sr_id: str) -> None:
        if await self._consultant(r, sr_id) != actor.institution:
            raise refused("cw-note-party", "the consult note is written by the consultant's institution",
                          "DocumentReference.context.related", who=True)

    async def check_note(self, r: Reader, id: str) -> None:
        note = await r.get(f"DocumentReference/{id}")
        if note is None:
            return
        sr_id = model.request_of(note)
        sr = await r.get(f"ServiceRequest/{sr_id}") if sr_id else None
        if sr is None or not model.is_request(sr):
            raise refused("cw-note-request", f"the note's context.related ServiceRequest/{sr_id} is not a consult "
                          "request the server holds", "DocumentReference.context.related")
        if model.reference(note.get("subject")) != model.reference(sr.get("subject")):
            raise refused("cw-note-subject", "the consult note is about the consult's patient",
                          "DocumentReference.subject")

    # -- parties ---------------------------------------------------------------------------------

    async def _consultant(self, r: Reader, sr_id: str) -> str | None:
        tasks = [t for t in await r.find("Task", [("focus", f"ServiceRequest/{sr_id}")])
                 if model.task_kind(t) == "consult" and model.status_code(t) in model.LIVE_TASK]
        for task in tasks:
            owner = await r.institution(model.reference(task.get("owner")))
            if owner:
                return owner
        sr = await r.get(f"ServiceRequest/{sr_id}")
        return await r.institution(next(iter(model.references((sr or {}).get("performer"))), None))

    async def _parties(self, r: Reader, sr_id: str | None) -> set[str]:
        if not sr_id:
            return set()
        requester = await r.requester(sr_id)
        consultant = await self._consultant(r, sr_id)
        return {p for p in (requester, consultant) if p}
