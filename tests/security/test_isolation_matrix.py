"""The isolation matrix: institution by path by resource type, over a generated dataset, on SQLite and
MongoDB. An institution sees what it owns and the shared directory, nothing of the others' own
resources: not by read, vread or history, not in search results, totals or counts, not through
chains, ``_has``, ``_include``/``_revinclude``, compartments, ``$everything``, Bundle entries or
``$validate`` of a stored id, and no condition of a conditional interaction matches it.

The dataset is generated (seeded, so failures reproduce): each institution writes patients with
identifiers from a shared pool (so criteria match resources of several institutions), observations
about its own and about the others' patients (so references cross the boundary), encounters, and a
Practitioner and Location in the shared directory.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures
from tests.security.conftest import BASE, Institution, enrol, token_form

MRN = "urn:mrn:shared"
SHARED = {"Organization", "Endpoint", "Practitioner", "Location"}
OWN_TYPES = ("Patient", "Observation", "Encounter")


@dataclasses.dataclass
class World:
    app: Any
    clients: dict[str, httpx.AsyncClient]  # institution name -> client with a token
    owner: dict[str, str]  # "Type/id" -> institution name
    orgs: dict[str, str]  # institution name -> Organization id

    def visible(self, who: str, ref: str) -> bool:
        return ref.split("/")[0] in SHARED or self.owner.get(ref) == who


async def _build(settings: Settings, definitions: Definitions, seed: int) -> AsyncIterator[World]:
    rnd = random.Random(seed)
    app = create_app(settings, definitions=definitions)
    async with app.router.lifespan_context(app):
        names = ["a", "b", "c"]
        inst: dict[str, Institution] = {}
        for n, name in enumerate(names):
            inst[name] = await enrol(app, name, f"1000000{n}")
        clients: dict[str, httpx.AsyncClient] = {}
        for name, who in inst.items():
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
            token = (await http.post("/auth/token", data=token_form(who.client_id, who.pem, "system/*.cruds"))).json()
            http.headers["Authorization"] = f"Bearer {token['access_token']}"
            clients[name] = http
        owner: dict[str, str] = {}
        patients: dict[str, list[str]] = {n: [] for n in names}

        async def create(who: str, body: dict[str, Any]) -> str:
            r = await clients[who].post(f"/{body['resourceType']}", json=body)
            assert r.status_code == 201, r.text
            ref = f"{body['resourceType']}/{r.json()['id']}"
            owner[ref] = who
            return ref

        for who in names:
            for _ in range(rnd.randint(2, 3)):
                mrn = str(rnd.randint(1, 3))  # the pool is shared: the same MRN exists at several institutions
                patients[who].append(await create(who, {"resourceType": "Patient", "gender": rnd.choice(
                    ["male", "female"]), "identifier": [{"system": MRN, "value": mrn}]}))
            await create(who, {"resourceType": "Practitioner", "name": [{"family": f"Dr {who}"}]})
            await create(who, {"resourceType": "Location", "name": f"Ward {who}"})
        for who in names:
            for _ in range(3):
                # Mostly about its own patients, sometimes about another institution's.
                pool = patients[who] if rnd.random() < 0.7 else patients[rnd.choice([n for n in names if n != who])]
                subject = rnd.choice(pool)
                await create(who, {"resourceType": "Observation", "status": "final",
                                   "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                                   "subject": {"reference": subject}})
                await create(who, {"resourceType": "Encounter", "status": "finished",
                                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                             "code": "AMB"}, "subject": {"reference": subject}})
        for name, who in inst.items():
            owner[f"Organization/{who.organization}"] = name
        yield World(app, clients, owner, {n: i.organization for n, i in inst.items()})
        for http in clients.values():
            await http.aclose()


def _refs(bundle: dict[str, Any], mode: str | None = None) -> list[str]:
    """The resources of a Bundle (Provenances and AuditEvents, the records of what each did, checked apart)."""
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if "resource" in e and e["resource"]["resourceType"] not in ("OperationOutcome", "Provenance", "AuditEvent")
            and (mode is None or e.get("search", {}).get("mode") == mode)]


async def _check(world: World) -> list[str]:
    """Every path for every institution; the list of violations (empty when isolation holds)."""
    bad: list[str] = []
    owned = {who: {r for r, o in world.owner.items() if o == who} for who in world.clients}

    def expect(cond: bool, what: str) -> None:
        if not cond:
            bad.append(what)

    for who, http in world.clients.items():
        for ref in world.owner:
            type, id = ref.split("/")
            visible = world.visible(who, ref)
            for path in (ref, f"{ref}/_history", f"{ref}/_history/1"):
                status = (await http.get(f"/{path}")).status_code
                expect(status == (200 if visible else 404), f"{who} GET {path}: {status}")
            if type in OWN_TYPES and not visible:
                status = (await http.post(f"/{type}/{id}/$validate")).status_code
                expect(status == 400, f"{who} $validate stored {ref}: {status}")
                batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET",
                                                                                         "url": ref}}]}
                entry = (await http.post("/", json=batch)).json()["entry"][0]
                expect(entry["response"]["status"].startswith("404"), f"{who} batch GET {ref}")
        for type in (*OWN_TYPES, "Practitioner", "Location", "Organization"):
            want = {r for r in world.owner if r.startswith(type + "/") and world.visible(who, r)}
            body = (await http.get(f"/{type}", params={"_count": "500"})).json()
            expect(set(_refs(body)) == want and body["total"] == len(want), f"{who} search {type}")
            count = (await http.get(f"/{type}", params={"_summary": "count"})).json()["total"]
            expect(count == len(want), f"{who} {type}?_summary=count = {count}, wants {len(want)}")
            hist = (await http.get(f"/{type}/_history", params={"_count": "500"})).json()
            expect({"/".join(r.split("/")[:2]) for r in _refs(hist)} <= want, f"{who} {type}/_history")
        everything = (await http.get("/", params={"_count": "500", "_type": "Patient,Observation,Encounter"})).json()
        expect(set(_refs(everything)) <= owned[who], f"{who} system search")
        system_history = (await http.get("/_history", params={"_count": "1000"})).json()
        leaked = {r for r in _refs(system_history) if not world.visible(who, r)}
        expect(not leaked, f"{who} system _history leaks {leaked}")
        # Provenances belong to the institution whose client wrote: only its own are visible.
        for e in (await http.get("/Provenance", params={"_count": "500"})).json().get("entry", []):
            agent = e["resource"]["agent"][-1]
            expect(agent["onBehalfOf"]["reference"] == f"Organization/{world.orgs[who]}", f"{who} sees a Provenance "
                   f"of {agent['onBehalfOf']['reference']}")
        # Includes never bring in what the institution may not see, in either direction.
        inc = (await http.get("/Observation", params={"_include": "Observation:subject", "_count": "500"})).json()
        expect(set(_refs(inc, "include")) <= owned[who], f"{who} _include leaks")
        rev = (await http.get("/Patient", params={"_revinclude": "Observation:subject", "_count": "500"})).json()
        expect(set(_refs(rev, "include")) <= owned[who], f"{who} _revinclude leaks")
        # Chains and _has only go through visible resources.
        for mrn in ("1", "2", "3"):
            chained = (await http.get("/Observation", params={"subject:Patient.identifier": f"{MRN}|{mrn}"})).json()
            for ref in _refs(chained):
                obs_subject = await http.get(f"/{ref}")
                subject = obs_subject.json()["subject"]["reference"]
                expect(world.visible(who, ref) and world.visible(who, subject), f"{who} chain via {subject}")
            has = (await http.get("/Patient", params={"_has:Observation:subject:code": "8867-4",
                                                      "identifier": f"{MRN}|{mrn}"})).json()
            for ref in _refs(has):
                expect(world.visible(who, ref), f"{who} _has returned {ref}")
                obs = (await http.get("/Observation", params={"subject": ref})).json()
                expect(obs["total"] > 0, f"{who} _has matched {ref} through an invisible Observation")
        # Compartments and $everything.
        for patient in [r for r in world.owner if r.startswith("Patient/")]:
            comp = await http.get(f"/{patient}/Observation")
            if world.visible(who, patient):
                expect(set(_refs(comp.json())) <= owned[who], f"{who} compartment {patient}")
                ev = (await http.get(f"/{patient}/$everything")).json()
                expect(set(_refs(ev)) <= owned[who], f"{who} $everything {patient}")
            else:
                expect((await http.get(f"/{patient}/$everything")).status_code == 404, f"{who} $everything")
                # Only its own resources that point at that patient id (which it wrote itself).
                expect(set(_refs(comp.json())) <= owned[who], f"{who} compartment of invisible {patient}")
        # Conditions never match what the institution cannot see.
        for mrn in ("1", "2", "3"):
            crit = f"identifier={MRN}|{mrn}"
            mine = [r for r in owned[who] if r.startswith("Patient/")]
            r = await http.post("/Patient", json={"resourceType": "Patient", "identifier": [
                {"system": MRN, "value": mrn}]}, headers={"If-None-Exist": crit})
            matches = (await http.get("/Patient", params={"identifier": f"{MRN}|{mrn}"})).json()["total"]
            if r.status_code == 201:
                world.owner[f"Patient/{r.json()['id']}"] = who
                owned[who].add(f"Patient/{r.json()['id']}")
                expect(matches == 1, f"{who} conditional create created beside its own match")
            else:
                expect(r.status_code in (200, 412), f"{who} If-None-Exist {crit}: {r.status_code}")
                expect(len(mine) >= 1, f"{who} conditional create matched another institution's patient")
    return bad


@pytest.mark.parametrize("seed", [1, 2])
async def test_isolation_matrix_on_sqlite(settings: Settings, definitions: Definitions, seed: int) -> None:
    secure = dataclasses.replace(settings, auth=True, rate_limit=0)
    async for world in _build(secure, definitions, seed):
        assert await _check(world) == []


async def test_isolation_matrix_on_mongodb(tmp_path: Path, wiped_db_url: str,  # noqa: F811
                                           definitions: Definitions) -> None:
    secure = Settings(data_dir=tmp_path, store_url=wiped_db_url, cache_dir=str(CACHE_DIR), auth=True, rate_limit=0)
    async for world in _build(secure, definitions, 3):
        assert await _check(world) == []
