"""$consult-stats (interactions/stats.py): counts, turnarounds, recommendations and follow-ups of the
consults authored in a period, per (hub, partner, department), computed from the store and seen as
the caller sees them. The dataset below is seeded through the router as each institution (workflow and
isolation on) on a clock the test sets, and every expected number is worked out by hand next to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.api.demo import absolute
from fhir_exchange.api.enrolment import DEPARTMENTS, add_institution, add_network
from fhir_exchange.clock import Clock, instant
from fhir_exchange.consult.model import RECOMMENDATION_SYSTEM
from fhir_exchange.definitions import Definitions
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.interactions.stats import DEFINITION, groups_of, percentile
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR

BASE = "http://test/fhir"
CATEGORY = "http://fhir-exchange.org/fhir/CodeSystem/consult-category"
TASK_CODE = "http://fhir-exchange.org/fhir/CodeSystem/consult-task-code"
LOINC = "http://loinc.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MARCH = "2025-03-01/2025-03-31"


def t(text: str) -> datetime:
    """``03-03T02:00`` in 2025, UTC."""
    return datetime.fromisoformat(f"2025-{text}:00+00:00")


@dataclass
class SetClock:
    at: datetime = field(default_factory=lambda: t("02-01T00:00"))

    def now(self) -> datetime:
        return self.at


@dataclass
class Seeded:
    app: Starlette
    clock: SetClock
    orgs: dict[str, str]  # H, K (hubs), P, Q (partners) -> Organization id

    def actor(self, who: str) -> Actor:
        return Actor(institution=self.orgs[who], client_id=f"client-{who}", scopes=frozenset({"system/*.cruds"}))

    async def call(self, who: str | None, method: str, path: str, body: Any = None,
                   query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        actor = SYSTEM if who is None else self.actor(who)
        resp = await self.app.state.router.dispatch(FhirRequest(method, path, query or [], {}, body, BASE, actor))
        doc: dict[str, Any] = resp.json() or {}
        return doc

    async def stats(self, who: str | None, period: str = MARCH) -> list[dict[str, Any]]:
        answer = await self.call(who, "GET", "$consult-stats", query=[("period", period)])
        assert answer["resourceType"] == "Parameters"
        return list(groups_of(answer))

    def key(self, g: dict[str, Any]) -> tuple[str, str, str | None]:
        names = {f"Organization/{org}": who for who, org in self.orgs.items()}
        return names[g["hub"]], names[g["partner"]], g.get("department")


# -- the dataset --------------------------------------------------------------------------------------


class Builder:
    def __init__(self, s: Seeded) -> None:
        self.s = s

    def at(self, when: str) -> str:
        self.s.clock.at = t(when)
        return instant(self.s.clock.at)

    def role(self, who: str) -> str:
        return f"PractitionerRole/role-{who}"

    async def directory(self, who: str) -> None:
        org = self.s.orgs[who]
        await self.s.call(who, "PUT", f"Practitioner/doc-{who}", {
            "resourceType": "Practitioner", "id": f"doc-{who}", "name": [{"text": f"doctor {who}"}]})
        await self.s.call(who, "PUT", f"PractitionerRole/role-{who}", {
            "resourceType": "PractitionerRole", "id": f"role-{who}", "active": True,
            "practitioner": {"reference": f"Practitioner/doc-{who}"},
            "organization": {"reference": f"Organization/{org}"},
            "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                  "code": "doctor"}]}]})

    async def patient(self, who: str, hubs: list[str]) -> None:
        """Patient ``pat-WHO`` with one consent per hub (``consent-WHO-HUB``), for 2020-2099."""
        org = self.s.orgs[who]
        await self.s.call(who, "PUT", f"Patient/pat-{who}", {
            "resourceType": "Patient", "id": f"pat-{who}",
            "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": "http://x.kr/mrn",
                            "value": who, "assigner": {"reference": f"Organization/{org}"}}],
            "name": [{"text": "김민수"}], "gender": "male", "birthDate": "1948-03-02"})
        for hub in hubs:
            await self.s.call(who, "PUT", f"Consent/consent-{who}-{hub}", {
                "resourceType": "Consent", "id": f"consent-{who}-{hub}", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/pat-{who}"}, "dateTime": "2025-01-02T09:00:00+09:00",
                "performer": [{"reference": f"Patient/pat-{who}"}],
                "organization": [{"reference": f"Organization/{org}"}],
                "sourceAttachment": {"contentType": "application/pdf", "url": "https://x.kr/c.pdf"},
                "policy": [{"uri": "https://x.kr/policies/remote-consultation"}],
                "provision": {"type": "permit", "period": {"start": "2020-01-01", "end": "2099-12-31"},
                              "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                              "v3-ParticipationType", "code": "IRCP"}]},
                                         "reference": {"reference": f"Organization/{self.s.orgs[hub]}"}}],
                              "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                           "code": "TREAT"}]}})

    async def request(self, key: str, requester: str, hub: str, department: str, when: str) -> None:
        """Consult ``key``: ServiceRequest ``sr-KEY`` and Task ``task-KEY`` (requested), authored ``when``."""
        at = self.at(when)
        sr = {"resourceType": "ServiceRequest", "id": f"sr-{key}",
              "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                              "system": "http://x.kr/consult-requests", "value": key}],
              "status": "active", "intent": "order",
              "category": [{"coding": [{"system": CATEGORY, "code": "remote-consultation"}]}],
              "code": {"coding": [{"system": DEPARTMENTS, "code": department}]},
              "subject": {"reference": f"Patient/pat-{requester}"}, "authoredOn": at,
              "requester": {"reference": self.role(requester)},
              "performer": [{"reference": f"Organization/{self.s.orgs[hub]}"}], "reasonCode": [{"text": "소견 요청"}],
              "supportingInfo": [{"reference": f"Consent/consent-{requester}-{hub}", "type": "Consent"}]}
        task = {"resourceType": "Task", "id": f"task-{key}", "basedOn": [{"reference": f"ServiceRequest/sr-{key}"}],
                "status": "requested", "intent": "order",
                "code": {"coding": [{"system": TASK_CODE, "code": "consult"}]},
                "focus": {"reference": f"ServiceRequest/sr-{key}"}, "for": {"reference": f"Patient/pat-{requester}"},
                "authoredOn": at, "lastModified": at, "requester": {"reference": self.role(requester)},
                "owner": {"reference": f"Organization/{self.s.orgs[hub]}"}}
        await self.transaction(requester, sr, task)

    async def transaction(self, who: str, *resources: dict[str, Any]) -> None:
        """PUT ``resources`` in one transaction; what they name outside it by full URL (cx-bdl-1)."""
        local = {f"{r['resourceType']}/{r['id']}" for r in resources}
        await self.s.call(who, "POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": absolute(r, local, BASE),
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]})

    async def task(self, key: str, who: str, when: str, **changes: Any) -> None:
        at = self.at(when)
        current = await self.s.call(None, "GET", f"Task/task-{key}")
        task = {**{k: v for k, v in current.items() if k != "meta"}, "lastModified": at, **changes}
        await self.s.call(who, "PUT", f"Task/task-{key}", task)

    async def accept(self, key: str, hub: str, when: str) -> None:
        await self.task(key, hub, when, status="accepted", owner={"reference": self.role(hub)})

    async def complete(self, key: str, hub: str, when: str, recommendation: str) -> None:
        """In progress, then the note (dated ``when``) and the Task completed in one transaction."""
        await self.task(key, hub, when, status="in-progress")
        current = await self.s.call(None, "GET", f"Task/task-{key}")
        note = {"resourceType": "DocumentReference", "id": f"note-{key}", "status": "current", "docStatus": "final",
                "type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
                "category": [{"coding": [{"system": RECOMMENDATION_SYSTEM, "code": recommendation}]}],
                "subject": current["for"], "date": instant(self.s.clock.at), "author": [{"reference": self.role(hub)}],
                "custodian": {"reference": f"Organization/{self.s.orgs[hub]}"},
                "content": [{"attachment": {"contentType": "text/plain", "data": "7Iug6rK9"}}],
                "context": {"related": [current["focus"]]}}
        task = {**{k: v for k, v in current.items() if k != "meta"}, "status": "completed",
                "output": [{"type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
                            "valueReference": {"reference": f"DocumentReference/note-{key}"}}]}
        await self.transaction(hub, note, task)

    async def follow_up(self, key: str, of: str, requester: str, hub: str, when: str, due: str) -> None:
        at = self.at(when)
        await self.s.call(requester, "PUT", f"Task/task-{key}", {
            "resourceType": "Task", "id": f"task-{key}", "basedOn": [{"reference": f"ServiceRequest/sr-{of}"}],
            "partOf": [{"reference": f"Task/task-{of}"}], "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TASK_CODE, "code": "follow-up"}]},
            "focus": {"reference": f"ServiceRequest/sr-{of}"}, "for": {"reference": f"Patient/pat-{requester}"},
            "authoredOn": at, "lastModified": at, "requester": {"reference": self.role(requester)},
            "owner": {"reference": self.role(hub)}, "restriction": {"period": {"start": at[:10], "end": due}}})


@pytest.fixture
async def seeded(tmp_path: Path, definitions: Definitions) -> AsyncIterator[Seeded]:
    """Hubs H and K; partners P (of H for 02 and 21, of K for 01) and Q (of H for 02).

    consult  group      authored (2025)   what happened                                  hours to accept / note
    c0       H<-P 02    02-20 00:00       accepted 02-20 03:00, completed 02-21          (outside March)
    c1       H<-P 02    03-03 00:00       accepted 03-03 02:00, note 03-03 06:00         2 / 6, manage-locally
    c6       H<-P 21    03-05 00:00       accepted 03-05 01:30, note 03-05 12:00         1.5 / 12, manage-locally
    c2       H<-P 02    03-10 00:00       accepted 03-10 10:00, note 03-11 00:00         10 / 24, transfer-routine
    c3       H<-P 02    03-12 00:00       rejected 03-12 01:00
    c8       K<-P 01    03-15 00:00       accepted 03-15 06:00, note 03-15 09:00         6 / 9, transfer-urgent
    c4       H<-P 02    03-20 00:00       cancelled by P 03-20 05:00
    c5       H<-P 02    03-25 00:00       accepted 03-25 04:00 (still open)               4 / -
    c7       H<-Q 02    03-31 23:00       accepted 04-01 01:00                            2 / -
    follow-ups of c0 (H<-P 02): f1 due 02-27 (before March), f2 due 03-15; of c1: f3 due 04-10. The sweep
    on 04-01 02:00 marks f1 and f2 overdue (f3 is not due yet).
    """
    clock = SetClock()
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024, auth=True,
                        rate_limit=0, consult_sweep_interval=86_400.0)
    app = create_app(settings, definitions=definitions, clock=Clock(now=clock.now))
    async with app.router.lifespan_context(app):
        orgs: dict[str, str] = {}
        for who, hira in (("H", "61000001"), ("K", "61000002"), ("P", "61000003"), ("Q", "61000004")):
            org = await add_institution(app.state.router, app.state.registry, name=f"hospital {who}", hira_id=hira,
                                        connection="emr", endpoint_address=None, base_url=BASE)
            orgs[who] = org["organization"]
        for hub, partner, specialties in (("H", "P", ["02", "21"]), ("H", "Q", ["02"]), ("K", "P", ["01"])):
            await add_network(app.state.router, app.state.registry, hub=orgs[hub], partner=orgs[partner],
                              specialties=specialties, base_url=BASE)
        s = Seeded(app, clock, orgs)
        b = Builder(s)
        for who in orgs:
            await b.directory(who)
        await b.patient("P", ["H", "K"])
        await b.patient("Q", ["H"])
        await b.request("c0", "P", "H", "02", "02-20T00:00")
        await b.accept("c0", "H", "02-20T03:00")
        await b.complete("c0", "H", "02-21T00:00", "follow-up-consult")
        await b.follow_up("f1", "c0", "P", "H", "02-22T00:00", "2025-02-27")
        await b.follow_up("f2", "c0", "P", "H", "02-22T01:00", "2025-03-15")
        await b.request("c1", "P", "H", "02", "03-03T00:00")
        await b.accept("c1", "H", "03-03T02:00")
        await b.complete("c1", "H", "03-03T06:00", "manage-locally")
        await b.request("c6", "P", "H", "21", "03-05T00:00")
        await b.accept("c6", "H", "03-05T01:30")
        await b.complete("c6", "H", "03-05T12:00", "manage-locally")
        await b.request("c2", "P", "H", "02", "03-10T00:00")
        await b.accept("c2", "H", "03-10T10:00")
        await b.complete("c2", "H", "03-11T00:00", "transfer-routine")
        await b.request("c3", "P", "H", "02", "03-12T00:00")
        await b.task("c3", "H", "03-12T01:00", status="rejected", statusReason={"text": "not our field"})
        await b.request("c8", "P", "K", "01", "03-15T00:00")
        await b.accept("c8", "K", "03-15T06:00")
        await b.complete("c8", "K", "03-15T09:00", "transfer-urgent")
        await b.request("c4", "P", "H", "02", "03-20T00:00")
        await b.task("c4", "P", "03-20T05:00", status="cancelled", statusReason={"text": "patient discharged"})
        await b.request("c5", "P", "H", "02", "03-25T00:00")
        await b.accept("c5", "H", "03-25T04:00")
        await b.follow_up("f3", "c1", "P", "H", "03-26T00:00", "2025-04-10")
        await b.request("c7", "Q", "H", "02", "03-31T23:00")
        await b.accept("c7", "H", "04-01T01:00")
        b.at("04-01T02:00")
        assert await app.state.sweep.run() == 2  # f1 and f2 past due
        b.at("04-01T03:00")
        yield s


H_P_02 = {"requested": 5, "accepted": 3, "rejected": 1, "completed": 2, "cancelled": 1,
          # accept: c1 2 h, c5 4 h, c2 10 h -> median 4; p90 at rank 0.9 * 2 = 1.8: 4 + 0.8 * (10 - 4) = 8.8
          "turnaround-accept": {"count": 3, "median": 4.0, "p90": 8.8},
          # note: c1 6 h, c2 24 h -> median 15; p90 at rank 0.9: 6 + 0.9 * 18 = 22.2
          "turnaround-note": {"count": 2, "median": 15.0, "p90": 22.2},
          "recommendation": {"manage-locally": 1, "transfer-routine": 1}, "transfers-avoided": 1,
          # f2 (due 03-15, overdue) and f3 (due 04-10); f1 was due before March
          "follow-ups-due": 2, "follow-ups-overdue": 1}
H_P_21 = {"requested": 1, "accepted": 1, "rejected": 0, "completed": 1, "cancelled": 0,
          "turnaround-accept": {"count": 1, "median": 1.5, "p90": 1.5},
          "turnaround-note": {"count": 1, "median": 12.0, "p90": 12.0},
          "recommendation": {"manage-locally": 1}, "transfers-avoided": 1, "follow-ups-due": 0, "follow-ups-overdue": 0}
H_Q_02 = {"requested": 1, "accepted": 1, "rejected": 0, "completed": 0, "cancelled": 0,
          "turnaround-accept": {"count": 1, "median": 2.0, "p90": 2.0}, "turnaround-note": {"count": 0},
          "recommendation": {}, "transfers-avoided": 0, "follow-ups-due": 0, "follow-ups-overdue": 0}
K_P_01 = {"requested": 1, "accepted": 1, "rejected": 0, "completed": 1, "cancelled": 0,
          "turnaround-accept": {"count": 1, "median": 6.0, "p90": 6.0},
          "turnaround-note": {"count": 1, "median": 9.0, "p90": 9.0},
          "recommendation": {"transfer-urgent": 1}, "transfers-avoided": 0,
          "follow-ups-due": 0, "follow-ups-overdue": 0}


def numbers(g: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in g.items() if k not in ("hub", "partner", "department")}


async def test_the_system_counts_every_consult_of_the_period(seeded: Seeded) -> None:
    groups = await seeded.stats(None)
    got = {seeded.key(g): numbers(g) for g in groups}
    assert got == {("H", "P", "02"): H_P_02, ("H", "P", "21"): H_P_21, ("H", "Q", "02"): H_Q_02,
                   ("K", "P", "01"): K_P_01}
    # ordered by hub, partner (their names) and department
    assert [seeded.key(g) for g in groups] == [("H", "P", "02"), ("H", "P", "21"), ("H", "Q", "02"),
                                               ("K", "P", "01")]


async def test_an_institution_counts_only_its_own_consults(seeded: Seeded) -> None:
    """A requester owns its consults: it counts all of them, and nobody else's."""
    assert {seeded.key(g): numbers(g) for g in await seeded.stats("Q")} == {("H", "Q", "02"): H_Q_02}
    assert {seeded.key(g): numbers(g) for g in await seeded.stats("P")} == {
        ("H", "P", "02"): H_P_02, ("H", "P", "21"): H_P_21, ("K", "P", "01"): K_P_01}
    # The consultant sees the consults it was asked for (its grants): never another hub's.
    assert {seeded.key(g) for g in await seeded.stats("K")} == {("K", "P", "01")}
    assert {seeded.key(g)[0] for g in await seeded.stats("H")} == {"H"}


async def test_the_hub_sees_the_follow_ups_it_owns(seeded: Seeded) -> None:
    """c0 was completed on 02-21, more than the 30 days of grace before 04-01, but its follow-ups f1 and f2
    are H's open work: H still sees them (consult/access.py), and counts f2 (due 03-15, overdue) and f3."""
    mine = {seeded.key(g): numbers(g) for g in await seeded.stats("H")}[("H", "P", "02")]
    assert (mine["follow-ups-due"], mine["follow-ups-overdue"]) == (2, 1)


async def test_the_period_bounds_the_authored_consults(seeded: Seeded) -> None:
    february = {seeded.key(g): numbers(g) for g in await seeded.stats(None, "2025-02-01/2025-02-28")}
    c0 = february[("H", "P", "02")]
    assert (c0["requested"], c0["accepted"], c0["completed"]) == (1, 1, 1)
    assert c0["turnaround-accept"] == {"count": 1, "median": 3.0, "p90": 3.0}
    assert c0["turnaround-note"] == {"count": 1, "median": 24.0, "p90": 24.0}
    assert c0["recommendation"] == {"follow-up-consult": 1}
    assert (c0["follow-ups-due"], c0["follow-ups-overdue"]) == (3, 2)  # f1, f2, f3 are all due from February on
    # dateTimes: only c7 (03-31 23:00) is authored on the last evening of March
    late = {seeded.key(g): (numbers(g)["requested"], numbers(g)["follow-ups-due"])
            for g in await seeded.stats(None, "2025-03-31T22:00:00Z/2025-04-30")}
    assert late == {("H", "Q", "02"): (1, 0), ("H", "P", "02"): (0, 1)}  # H<-P 02 only for f3, due 04-10


async def test_post_with_a_parameters_body_answers_the_same(seeded: Seeded) -> None:
    got = await seeded.call(None, "POST", "$consult-stats", {"resourceType": "Parameters", "parameter": [
        {"name": "period", "valuePeriod": {"start": "2025-03-01", "end": "2025-03-31"}}]})
    assert got["parameter"][0] == {"name": "period", "valuePeriod": {"start": "2025-03-01", "end": "2025-03-31"}}
    assert [numbers(g) for g in groups_of(got)] == [H_P_02, H_P_21, H_Q_02, K_P_01]


async def test_a_group_names_hub_partner_and_department(seeded: Seeded) -> None:
    answer = await seeded.call(None, "GET", "$consult-stats", query=[("period", MARCH)])
    group = next(p for p in answer["parameter"] if p["name"] == "group")
    parts = {p["name"]: p for p in group["part"]}
    assert parts["hub"]["valueReference"] == {"reference": f"Organization/{seeded.orgs['H']}", "display": "hospital H"}
    assert parts["partner"]["valueReference"]["reference"] == f"Organization/{seeded.orgs['P']}"
    assert parts["department"]["valueCoding"] == {"system": DEPARTMENTS, "code": "02"}
    median = next(p for p in parts["turnaround-accept"]["part"] if p["name"] == "median")
    assert median["valueQuantity"] == {"value": 4.0, "unit": "h", "system": "http://unitsofmeasure.org", "code": "h"}
    assert parts["requested"]["valueUnsignedInt"] == 5


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([2, 10, 4], 0.5) == 4
    assert percentile([6, 24], 0.5) == 15
    assert percentile([2, 4, 10], 0.9) == pytest.approx(8.8)
    assert percentile([7], 0.9) == 7


# -- over HTTP ----------------------------------------------------------------------------------------


async def test_the_operation_is_served_and_declared(client: httpx.AsyncClient) -> None:
    r = await client.get("/$consult-stats", params={"period": MARCH})
    assert r.status_code == 200, r.text
    assert r.json() == {"resourceType": "Parameters", "parameter": [
        {"name": "period", "valuePeriod": {"start": "2025-03-01", "end": "2025-03-31"}}]}
    r = await client.post("/$consult-stats?period=2025-03-01/2025-03-31")
    assert r.status_code == 200, r.text
    statement = (await client.get("/metadata")).json()
    operations = {o["name"]: o["definition"] for o in statement["rest"][0].get("operation", [])}
    assert operations.get("consult-stats") == DEFINITION


@pytest.mark.parametrize("period", [None, "2025-03-01", "2025-03-01/", "march/april", "2025-03-31/2025-03-01"])
async def test_a_missing_or_malformed_period_is_a_400(client: httpx.AsyncClient, period: str | None) -> None:
    r = await client.get("/$consult-stats", params={"period": period} if period is not None else {})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == ["period"]


async def test_the_numbers_come_from_the_store(seeded: Seeded, tmp_path: Path, definitions: Definitions) -> None:
    """Another process on the same store (a second app) answers the same numbers: nothing is counted in memory."""
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False, consult_sweep_interval=86_400.0)
    other = create_app(settings, definitions=definitions)
    async with other.router.lifespan_context(other):
        r = await other.state.router.dispatch(FhirRequest("GET", "$consult-stats", [("period", MARCH)], base_url=BASE))
    assert [numbers(g) for g in groups_of(r.json() or {})] == [H_P_02, H_P_21, H_Q_02, K_P_01]
