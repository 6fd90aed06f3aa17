"""Consult networks: ``fhir-exchange network add`` (api/enrolment.add_network) writes the hub's
OrganizationAffiliation, and the workflow's rule cw-network lets a partner request consults from its
hub only, in the departments the hub offers it, while the affiliation is active and in its period.
Authentication on: each institution acts through its own client and token."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app, profile_folders
from fhir_exchange.api.enrolment import DEPARTMENTS, NETWORK_PROFILE, add_network
from fhir_exchange.cli import main
from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir import jsonio
from fhir_exchange.settings import Settings
from fhir_exchange.store import open_store
from tests.conftest import CACHE_DIR
from tests.security.conftest import BASE, enrol, token_form

CATEGORY = "http://fhir-exchange.org/fhir/CodeSystem/consult-category"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass
class Party:
    name: str
    org: str
    http: httpx.AsyncClient

    @property
    def ref(self) -> str:
        return f"Organization/{self.org}"


@dataclass
class World:
    app: Starlette
    hub: Party
    partner: Party
    outsider: Party  # registered, affiliated with nobody
    affiliation: str  # OrganizationAffiliation id: hub <- partner, department 02 (신경과) only


@pytest.fixture
async def world(tmp_path: Path, definitions: Definitions) -> AsyncIterator[World]:
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024, auth=True,
                        rate_limit=0, consult_sweep_interval=86_400.0)
    app = create_app(settings, definitions=definitions)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        parties: list[Party] = []
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as anonymous:
            for name, hira, connection in (("한빛대학교병원", "41000001", "emr"),
                                           ("가온요양병원", "41000002", "portal"), ("외딴병원", "41000003", "emr")):
                inst = await enrol(app, name, hira, connection)
                r = await anonymous.post("/auth/token", data=token_form(inst.client_id, inst.pem, "system/*.cruds"))
                assert r.status_code == 200, r.text
                http = httpx.AsyncClient(transport=transport, base_url=BASE,
                                         headers={"Authorization": f"Bearer {r.json()['access_token']}"})
                parties.append(Party(name, inst.organization, http))
        hub, partner, outsider = parties
        network = await add_network(app.state.router, app.state.registry, hub=hub.org, partner=partner.org,
                                    specialties=["02"], base_url=BASE)
        for party in parties:
            await directory(party)
        try:
            yield World(app, hub, partner, outsider, network["affiliation"])
        finally:
            for party in parties:
                await party.http.aclose()


async def directory(party: Party) -> None:
    """The party's doctor and its PractitionerRole (the requester of its consults)."""
    doctor = {"resourceType": "Practitioner", "id": f"doc-{party.org}", "active": True, "name": [{"text": "의사"}]}
    role = {"resourceType": "PractitionerRole", "id": f"role-{party.org}", "active": True,
            "practitioner": {"reference": f"Practitioner/doc-{party.org}"}, "organization": {"reference": party.ref},
            "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                  "code": "doctor"}]}]}
    for res in (doctor, role):
        r = await party.http.put(f"/{res['resourceType']}/{res['id']}", json=res)
        assert r.status_code in (200, 201), r.text


async def request_consult(requester: Party, hub: Party, department: str = "02") -> httpx.Response:
    """The requester's patient and consent (naming the hub), then its consult ServiceRequest to the hub."""
    patient, consent = f"pat-{uuid.uuid4().hex[:12]}", f"consent-{uuid.uuid4().hex[:12]}"
    resources = [
        {"resourceType": "Patient", "id": patient,
         "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": "http://x.example.kr/mrn",
                         "value": patient, "assigner": {"reference": requester.ref}}],
         "name": [{"text": "김민수"}], "gender": "male", "birthDate": "1948-03-02"},
        {"resourceType": "Consent", "id": consent, "status": "active",
         "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                               "code": "patient-privacy"}]},
         "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
         "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2025-03-03T09:00:00+09:00",
         "performer": [{"reference": f"Patient/{patient}"}], "organization": [{"reference": requester.ref}],
         "sourceAttachment": {"contentType": "application/pdf", "url": "https://x.example.kr/c.pdf"},
         "policy": [{"uri": "https://x.example.kr/policies/remote-consultation"}],
         "provision": {"type": "permit", "period": {"start": "2020-01-01", "end": "2099-12-31"},
                       "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                       "v3-ParticipationType", "code": "IRCP"}]},
                                  "reference": {"reference": hub.ref}}],
                       "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                    "code": "TREAT"}]}}]
    for res in resources:
        r = await requester.http.put(f"/{res['resourceType']}/{res['id']}", json=res)
        assert r.status_code == 201, r.text
    return await requester.http.post("/ServiceRequest", json={
        "resourceType": "ServiceRequest",
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                        "system": "http://x.example.kr/consult-requests", "value": patient}],
        "status": "active", "intent": "order",
        "category": [{"coding": [{"system": CATEGORY, "code": "remote-consultation"}]}],
        "code": {"coding": [{"system": DEPARTMENTS, "code": department}]},
        "subject": {"reference": f"Patient/{patient}"}, "authoredOn": "2025-03-03T09:30:00+09:00",
        "requester": {"reference": f"PractitionerRole/role-{requester.org}"},
        "performer": [{"reference": hub.ref}],
        "reasonCode": [{"text": "뇌경색 후 인지 저하"}],
        "supportingInfo": [{"reference": f"Consent/{consent}", "type": "Consent"}]})


def refused_by_network(r: httpx.Response) -> str:
    assert r.status_code == 409, r.text
    diagnostics: str = r.json()["issue"][0]["diagnostics"]
    assert diagnostics.startswith("cw-network"), r.text
    return diagnostics


async def change_affiliation(w: World, **changes: Any) -> None:
    """The hub (its owner) changes its affiliation with the partner (a None value removes the element)."""
    r = await w.hub.http.get(f"/OrganizationAffiliation/{w.affiliation}")
    assert r.status_code == 200, r.text
    aff = {k: v for k, v in {**r.json(), **changes}.items() if k != "meta" and v is not None}
    r = await w.hub.http.put(f"/OrganizationAffiliation/{w.affiliation}", json=aff)
    assert r.status_code == 200, r.text


def day(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


async def test_a_partner_requests_a_consult_from_its_hub(world: World) -> None:
    r = await request_consult(world.partner, world.hub)
    assert r.status_code == 201, r.text


async def test_an_institution_affiliated_with_no_hub_is_refused(world: World) -> None:
    diagnostics = refused_by_network(await request_consult(world.outsider, world.hub))
    assert "not a partner" in diagnostics


async def test_the_hub_is_not_the_partner_of_its_partner(world: World) -> None:
    """The affiliation goes one way: the hub does not request consults from its partner."""
    refused_by_network(await request_consult(world.hub, world.partner))


async def test_a_department_the_hub_does_not_offer_is_refused(world: World) -> None:
    diagnostics = refused_by_network(await request_consult(world.partner, world.hub, department="21"))
    assert "does not offer" in diagnostics


async def test_an_affiliation_without_specialty_covers_every_department(world: World) -> None:
    await change_affiliation(world, specialty=None)
    aff = (await world.hub.http.get(f"/OrganizationAffiliation/{world.affiliation}")).json()
    assert "specialty" not in aff
    r = await request_consult(world.partner, world.hub, department="21")
    assert r.status_code == 201, r.text


async def test_an_inactive_affiliation_is_refused(world: World) -> None:
    await change_affiliation(world, active=False)
    refused_by_network(await request_consult(world.partner, world.hub))


async def test_an_expired_affiliation_is_refused(world: World) -> None:
    await change_affiliation(world, period={"start": day(-400), "end": day(-1)})
    refused_by_network(await request_consult(world.partner, world.hub))


async def test_an_affiliation_not_yet_started_is_refused(world: World) -> None:
    await change_affiliation(world, period={"start": day(2)})
    refused_by_network(await request_consult(world.partner, world.hub))


async def test_an_affiliation_ending_today_still_covers_today(world: World) -> None:
    await change_affiliation(world, period={"start": day(-30), "end": day(0)})
    r = await request_consult(world.partner, world.hub)
    assert r.status_code == 201, r.text


async def test_an_affiliation_period_with_a_time_zone_is_compared_as_instants(world: World) -> None:
    """Started an hour ago and ending in an hour, written in KST (+09:00) and HST (-10:00): in force now."""
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=9))).isoformat(timespec="seconds")
    end = (now + timedelta(hours=1)).astimezone(timezone(timedelta(hours=-10))).isoformat(timespec="seconds")
    await change_affiliation(world, period={"start": start, "end": end})
    r = await request_consult(world.partner, world.hub)
    assert r.status_code == 201, r.text


async def test_the_hub_owns_the_affiliation_and_everyone_reads_it(world: World) -> None:
    """Written as the hub: the partner cannot end or widen it; it is part of the shared directory."""
    r = await world.partner.http.get(f"/OrganizationAffiliation/{world.affiliation}")
    assert r.status_code == 200, r.text
    aff = r.json()
    assert aff["organization"] == {"reference": world.hub.ref}
    assert aff["participatingOrganization"] == {"reference": world.partner.ref}
    assert aff["active"] is True and aff["period"]["start"] in (day(-1), day(0))  # today (UTC), at a midnight
    assert [c["coding"][0]["code"] for c in aff["specialty"]] == ["02"]
    widened = {k: v for k, v in aff.items() if k not in ("meta", "specialty")}
    r = await world.partner.http.put(f"/OrganizationAffiliation/{world.affiliation}", json=widened)
    assert r.status_code == 403, r.text
    r = await world.outsider.http.get("/OrganizationAffiliation", params={"primary-organization": world.hub.ref})
    assert r.status_code == 200 and r.json()["total"] == 1, r.text


async def test_two_affiliations_of_one_pair_offer_both_their_departments(world: World) -> None:
    """``network add`` twice for one pair: each affiliation's departments are offered (cw-network looks at
    every active affiliation of the pair, not only the first it finds)."""
    await add_network(world.app.state.router, world.app.state.registry, hub=world.hub.org,
                      partner=world.partner.org, specialties=["21"], base_url=BASE)
    for department in ("02", "21"):
        r = await request_consult(world.partner, world.hub, department=department)
        assert r.status_code == 201, f"{department}: {r.text}"


# -- the command line ---------------------------------------------------------------------------------


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_network_add_writes_the_hubs_affiliation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--data-dir", str(tmp_path)]
    assert main(["institution", "add", "--name", "한빛대학교병원", "--hira-id", "51000001", "--connection", "emr",
                 *store]) == 0
    assert main(["institution", "add", "--name", "가온요양병원", "--hira-id", "51000002", "--connection", "portal",
                 *store]) == 0
    hub, partner = (x["organization"] for x in _json_lines(capsys.readouterr().out))
    assert main(["network", "add", "--hub", hub, "--partner", partner, "--specialty", "02", "--specialty", "21",
                 *store]) == 0
    printed = _json_lines(capsys.readouterr().out)
    assert len(printed) == 1 and printed[0]["hub"] == hub and printed[0]["partner"] == partner
    aff_id = printed[0]["affiliation"]

    async def stored() -> tuple[dict[str, Any], str | None]:
        db = open_store(f"sqlite:///{tmp_path / 'fhir.db'}")
        await db.open()
        try:
            v = await db.read("OrganizationAffiliation", aff_id)
        finally:
            await db.close()
        assert v is not None
        return jsonio.loads(v.body), v.owner

    aff, owner = asyncio.run(stored())
    assert owner == hub, "the hub owns its affiliation"
    assert aff["organization"] == {"reference": f"Organization/{hub}"}
    assert aff["participatingOrganization"] == {"reference": f"Organization/{partner}"}
    assert aff["active"] is True
    assert aff["period"] == {"start": day(0)} or aff["period"] == {"start": day(-1)}  # today (UTC)
    assert [c["coding"][0] for c in aff["specialty"]] == [
        {"system": DEPARTMENTS, "code": "02", "display": "신경과"},
        {"system": DEPARTMENTS, "code": "21", "display": "재활의학과"}]
    profiled = any((f / "StructureDefinition-consult-network.json").exists() for f in profile_folders())
    assert (aff.get("meta", {}).get("profile") == [NETWORK_PROFILE]) is profiled


def test_network_add_refuses_what_cannot_be_a_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--data-dir", str(tmp_path)]
    assert main(["institution", "add", "--name", "한빛대학교병원", "--hira-id", "51000001", "--connection", "emr",
                 *store]) == 0
    (hub,) = (x["organization"] for x in _json_lines(capsys.readouterr().out))
    assert main(["network", "add", "--hub", hub, "--partner", "no-such-org", *store]) == 1
    assert "--partner: Organization/no-such-org is not a registered institution" in capsys.readouterr().err
    assert main(["network", "add", "--hub", hub, "--partner", hub, *store]) == 1
    assert "not its own partner" in capsys.readouterr().err
    assert main(["institution", "add", "--name", "가온요양병원", "--hira-id", "51000002", "--connection", "portal",
                 *store]) == 0
    (partner,) = (x["organization"] for x in _json_lines(capsys.readouterr().out))
    assert main(["network", "add", "--hub", hub, "--partner", partner, "--specialty", "99", *store]) == 1
    assert "not HIRA medical department codes" in capsys.readouterr().err
