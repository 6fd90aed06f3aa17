"""$consult-stats: this server's own operation. No FHIR specification or implementation guide defines
statistics of remote consultations, so it follows none; its OperationDefinition's canonical is
http://fhir-exchange.org/fhir/OperationDefinition/consult-stats (system level, GET or POST, no
effect on the store), shaped like the operations of https://hl7.org/fhir/R4/operations.html.

``GET|POST [base]/$consult-stats?period=START/END``. ``period`` (1..1) is two FHIR dates or dateTimes
separated by ``/``: from the start of START to the end of END (``2025-03-01/2025-03-31`` is all of
March, UTC when no offset is given). In a POST it may also come as a ``period`` parameter of a
Parameters body (``valuePeriod``, or ``valueString`` ``START/END``).

The numbers are computed from the store on each call (searches and the Task version history, never
counters kept in memory) and in the caller's repository, so visibility applies: an institution counts
the consults it requested or was asked for (the consult Tasks it may read), an admin client or the
system counts all of them.

The answer is a ``Parameters`` resource: ``period`` (valuePeriod, as asked) and one ``group`` per
(network hub, partner, department) with these parts:

- ``hub`` and ``partner`` (valueReference to the Organizations: the consultant institution, the
  owner of the consult Task's ``owner``, else the ServiceRequest's performer; the requesting
  institution of the ServiceRequest's ``requester``), ``department`` (valueCoding: the
  ServiceRequest's code from the HIRA medical department CodeSystem; absent when it has none);
- ``requested``, ``accepted``, ``rejected``, ``completed``, ``cancelled`` (valueUnsignedInt): consult
  Tasks (code ``consult``) whose ``authoredOn`` lies in the period, by current or past status (a Task
  accepted then completed counts in both; accepted also counts a Task that passed a status that only
  follows acceptance: in-progress, on-hold, completed, failed);
- ``turnaround-accept`` and ``turnaround-note``: parts ``count`` (valueUnsignedInt), ``median`` and
  ``p90`` (valueQuantity in hours, UCUM ``h``, two decimals; absent when count is 0): from the
  ServiceRequest's ``authoredOn`` to the first version of the Task with status accepted (its
  ``meta.lastUpdated``; for a Task never stored as accepted, its first version past acceptance), and
  to the consult note's ``date`` (the earliest current note whose ``context.related`` is the
  ServiceRequest, relative or by its absolute URL on this server's base, as messages send it).
  Percentiles interpolate linearly between the closest ranks (the median of an even count is the
  mean of the two middle values);
- ``recommendation`` (one per code): parts ``code`` (valueCoding from
  http://fhir-exchange.org/fhir/CodeSystem/consult-recommendation) and ``count``: the consults whose
  latest current note carries that category; ``transfers-avoided`` (valueUnsignedInt): the count of
  ``manage-locally``;
- ``follow-ups-due`` and ``follow-ups-overdue`` (valueUnsignedInt): follow-up Tasks (code
  ``follow-up``) of the group's consults, whatever the period the consult was authored in, whose due
  date (``restriction.period.end``) falls in the period or after it; overdue: those of them whose
  ``businessStatus`` is ``overdue``.

Groups are ordered by hub, partner and department; a group with only follow-ups has zero counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.consult import model
from fhir_exchange.consult.consent import to_instant
from fhir_exchange.consult.profiles import TASK_CODE_SYSTEM
from fhir_exchange.errors import invalid
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.search.params.date import parse_range
from fhir_exchange.search.parse import parse
from fhir_exchange.store.port import HistoryQuery, ResourceVersion

DEFINITION = "http://fhir-exchange.org/fhir/OperationDefinition/consult-stats"
DEPARTMENTS = "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department"
MANAGE_LOCALLY = "manage-locally"
STATUSES = ("requested", "accepted", "rejected", "completed", "cancelled")
# Statuses a consult Task reaches only through acceptance (consult/lifecycle.py).
PAST_ACCEPTANCE = frozenset({"in-progress", "on-hold", "completed", "failed"})
_US_HOUR = 3_600_000_000
_US_DAY = 24 * _US_HOUR


@dataclass(slots=True)
class Group:
    hub: str | None
    partner: str | None
    department: dict[str, Any] | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    to_accept: list[float] = field(default_factory=list)
    to_note: list[float] = field(default_factory=list)
    recommendations: dict[tuple[str, str], tuple[dict[str, Any], int]] = field(default_factory=dict)
    follow_ups_due: int = 0
    follow_ups_overdue: int = 0


def _period(req: FhirRequest) -> tuple[str, str, int, int]:
    """(start, end, low, high): the period asked for, as [low, high) microseconds."""
    value = req.query_value("period")
    if value is None and isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters":
        for p in req.body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "period":
                if isinstance(p.get("valueString"), str):
                    value = p["valueString"]
                elif isinstance(p.get("valuePeriod"), dict):
                    period = p["valuePeriod"]
                    value = f"{period.get('start', '')}/{period.get('end', '')}"
    if not value:
        raise invalid("$consult-stats needs period=START/END (FHIR dates or dateTimes)", "period")
    start, sep, end = value.partition("/")
    low, high = parse_range(start) if start else None, parse_range(end) if end else None
    if not sep or low is None or high is None:
        raise invalid(f"period {value!r}: expected START/END, two FHIR dates or dateTimes "
                      "(e.g. 2025-03-01/2025-03-31)", "period")
    if high[1] <= low[0]:
        raise invalid(f"period {value!r}: END is before START", "period")
    return start, end, low[0], high[1]


def _at(value: Any) -> int | None:
    """The start of a FHIR date/dateTime/instant in microseconds (UTC)."""
    r = parse_range(value) if isinstance(value, str) else None
    return r[0] if r else None


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1), interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    below, above = math.floor(rank), math.ceil(rank)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


class _Stats:
    def __init__(self, repo: Repository, low: int, high: int, base: str = "") -> None:
        self.repo = repo
        self.base = base
        self.low, self.high = low, high
        self.docs: dict[str, dict[str, Any] | None] = {}
        self.groups: dict[tuple[str | None, str | None, str | None], Group] = {}

    async def search(self, type: str, params: list[tuple[str, str]]) -> list[ResourceVersion]:
        """Every match, page by page, as the caller sees them."""
        svc = self.repo.svc
        size = svc.settings.max_count
        out: list[ResourceVersion] = []
        offset = 0
        while True:
            query = parse(svc.definitions, type, [*params, ("_sort", "_id"), ("_total", "none"),
                                                  ("_count", str(size)), ("_offset", str(offset))],
                          default_count=size, max_count=size)
            page = (await self.repo.search(query)).matches
            out.extend(page)
            if len(page) < size:
                return out
            offset += size

    async def get(self, ref: str | None) -> dict[str, Any] | None:
        """A resource the caller may read (``Type/id``), parsed, once."""
        if not ref or "/" not in ref:
            return None
        if ref not in self.docs:
            type, id = ref.split("/", 1)
            v = await self.repo.read(type, id)
            self.docs[ref] = None if v is None or v.deleted else jsonio.loads(v.body)
        return self.docs[ref]

    async def institution(self, ref: str | None) -> str | None:
        if not ref:
            return None
        if ref.startswith("Organization/"):
            return ref
        party = await self.get(ref)
        key = {"PractitionerRole": "organization", "HealthcareService": "providedBy"}.get(ref.split("/", 1)[0])
        org = model.reference(party.get(key)) if party and key else None
        return org if org and org.startswith("Organization/") else None

    async def group(self, task: dict[str, Any], sr: dict[str, Any] | None) -> Group:
        hub = await self.institution(model.reference(task.get("owner")))
        if hub is None and sr is not None:
            hub = await self.institution(next(iter(model.references(sr.get("performer"))), None))
        partner = await self.institution(model.reference((sr or task).get("requester")))
        codings = list(model.codings((sr or {}).get("code")))
        department = next((c for c in codings if c.get("system") == DEPARTMENTS), None)
        key = (hub, partner, department.get("code") if department else None)
        if key not in self.groups:
            coding: dict[str, Any] | None = {k: department[k] for k in ("system", "code", "display")
                                             if k in department} if department else None
            self.groups[key] = Group(hub, partner, coding)
        return self.groups[key]

    async def consult(self, version: ResourceVersion) -> None:
        task = jsonio.loads(version.body)
        authored = _at(task.get("authoredOn"))
        if authored is None or not self.low <= authored < self.high:
            return
        sr_id = model.request_of(task)
        sr = await self.get(f"ServiceRequest/{sr_id}") if sr_id else None
        group = await self.group(task, sr)
        history = await self.repo.history(HistoryQuery(type="Task", id=version.id, count=1000))
        versions = sorted((v for v in history.versions if not v.deleted), key=lambda v: v.version_id)
        statuses = [(v, model.status_code(jsonio.loads(v.body))) for v in versions]
        seen = {s for _, s in statuses}
        group.counts["requested"] += 1
        if seen & ({"accepted"} | PAST_ACCEPTANCE):
            group.counts["accepted"] += 1
        for status in ("rejected", "completed", "cancelled"):
            group.counts[status] += status in seen
        requested_at = _at((sr or {}).get("authoredOn")) or authored
        accepted = next((v for v, s in statuses if s == "accepted"), None) \
            or next((v for v, s in statuses if s in PAST_ACCEPTANCE), None)
        accepted_at = _at(accepted.last_updated) if accepted else None
        if accepted_at is not None:
            group.to_accept.append((accepted_at - requested_at) / _US_HOUR)
        if sr_id is None:
            return
        # A note sent in a message names the request by its absolute URL (the index keeps it as written).
        related = f"ServiceRequest/{sr_id},{self.base}/ServiceRequest/{sr_id}" if self.base \
            else f"ServiceRequest/{sr_id}"
        notes = [jsonio.loads(v.body) for v in await self.search("DocumentReference", [("related", related)])]
        notes = [n for n in notes if model.is_note(n) and n.get("status") == "current" and _at(n.get("date"))]
        if not notes:
            return
        notes.sort(key=lambda n: _at(n.get("date")) or 0)
        group.to_note.append(((_at(notes[0].get("date")) or 0) - requested_at) / _US_HOUR)
        latest = notes[-1]
        for coding in model.codings(latest.get("category")):
            if coding.get("system") == model.RECOMMENDATION_SYSTEM and isinstance(coding.get("code"), str):
                key = (model.RECOMMENDATION_SYSTEM, str(coding["code"]))
                shown: dict[str, Any] = {k: coding[k] for k in ("system", "code", "display") if k in coding}
                known, n = group.recommendations.get(key, (shown, 0))
                group.recommendations[key] = (known, n + 1)
                break

    async def follow_up(self, version: ResourceVersion) -> None:
        task = jsonio.loads(version.body)
        due = model.period((task.get("restriction") or {}).get("period"))[1]
        due_range = parse_range(due) if due else None
        if due_range is None or due_range[1] <= self.low:
            return  # no due date, or due before the period
        sr_id = model.request_of(task)
        sr = await self.get(f"ServiceRequest/{sr_id}") if sr_id else None
        group = await self.group(task, sr)
        group.follow_ups_due += 1
        group.follow_ups_overdue += model.business_status(task) == "overdue"

    async def run(self) -> list[Group]:
        # The search narrows to a day around the period; the exact bounds are checked per Task.
        around = [("authored-on", f"ge{to_instant(self.low - _US_DAY)}"),
                  ("authored-on", f"le{to_instant(self.high + _US_DAY)}")]
        tasks = await self.search("Task", [("code", f"{TASK_CODE_SYSTEM}|consult"), *around])
        for v in tasks:
            await self.consult(v)
        for v in await self.search("Task", [("code", f"{TASK_CODE_SYSTEM}|follow-up")]):
            await self.follow_up(v)
        for g in self.groups.values():  # their names order the groups
            await self.get(g.hub)
            await self.get(g.partner)
        return sorted(self.groups.values(), key=self._order)

    def _order(self, g: Group) -> tuple[str, str, str]:
        return (self._name(g.hub), self._name(g.partner), (g.department or {}).get("code", ""))

    def _name(self, ref: str | None) -> str:
        doc = self.docs.get(ref or "")
        return str((doc or {}).get("name") or ref or "")

    async def reference(self, ref: str | None) -> dict[str, Any]:
        if ref is None:
            return {"display": "unknown"}
        doc = await self.get(ref)
        return {"reference": ref, **({"display": doc["name"]} if doc and isinstance(doc.get("name"), str) else {})}


def _hours(value: float) -> dict[str, Any]:
    return {"value": round(value, 2), "unit": "h", "system": "http://unitsofmeasure.org", "code": "h"}


def _turnaround(name: str, values: list[float]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "count", "valueUnsignedInt": len(values)}]
    if values:
        parts += [{"name": "median", "valueQuantity": _hours(percentile(values, 0.5))},
                  {"name": "p90", "valueQuantity": _hours(percentile(values, 0.9))}]
    return {"name": name, "part": parts}


async def _group_parameter(stats: _Stats, g: Group) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "hub", "valueReference": await stats.reference(g.hub)},
                                   {"name": "partner", "valueReference": await stats.reference(g.partner)}]
    if g.department:
        parts.append({"name": "department", "valueCoding": g.department})
    parts += [{"name": s, "valueUnsignedInt": g.counts[s]} for s in STATUSES]
    parts += [_turnaround("turnaround-accept", g.to_accept), _turnaround("turnaround-note", g.to_note)]
    for _, (coding, n) in sorted(g.recommendations.items()):
        parts.append({"name": "recommendation", "part": [{"name": "code", "valueCoding": coding},
                                                         {"name": "count", "valueUnsignedInt": n}]})
    avoided = g.recommendations.get((model.RECOMMENDATION_SYSTEM, MANAGE_LOCALLY), ({}, 0))[1]
    parts += [{"name": "transfers-avoided", "valueUnsignedInt": avoided},
              {"name": "follow-ups-due", "valueUnsignedInt": g.follow_ups_due},
              {"name": "follow-ups-overdue", "valueUnsignedInt": g.follow_ups_overdue}]
    return {"name": "group", "part": parts}


async def consult_stats(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    start, end, low, high = _period(req)
    stats = _Stats(repo, low, high, req.base_url.rstrip("/"))
    groups = await stats.run()
    parameters: list[dict[str, Any]] = [{"name": "period", "valuePeriod": {"start": start, "end": end}}]
    parameters += [await _group_parameter(stats, g) for g in groups]
    return FhirResponse(200, resource={"resourceType": "Parameters", "parameter": parameters})


def groups_of(parameters: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Each ``group`` of a $consult-stats answer as a plain dict (part name -> value; the repeating
    ``recommendation`` as {code: count}; turnarounds as {count, median, p90} in hours)."""
    for p in parameters.get("parameter") or []:
        if p.get("name") != "group":
            continue
        out: dict[str, Any] = {"recommendation": {}}
        for part in p.get("part") or []:
            name = part["name"]
            if name == "recommendation":
                sub = {x["name"]: x for x in part["part"]}
                out["recommendation"][sub["code"]["valueCoding"]["code"]] = sub["count"]["valueUnsignedInt"]
            elif "part" in part:
                out[name] = {x["name"]: x.get("valueUnsignedInt", (x.get("valueQuantity") or {}).get("value"))
                             for x in part["part"]}
            else:
                value = next(v for k, v in part.items() if k.startswith("value"))
                out[name] = value.get("reference", value.get("code")) if isinstance(value, dict) else value
        yield out


def install(operations: OperationRegistry) -> None:
    operations.register(Operation("consult-stats", consult_stats, DEFINITION, system=True, methods=("GET", "POST"),
                                  permission="s", scope_type="Task"))
