"""``fhir-exchange demo``: the pilot's three networks seeded in a fresh store, one consult walked over
REST and one over messages as the institutions themselves, and what the store holds afterwards."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.api.app import build_router, build_services, load_definitions
from fhir_exchange.cli import main
from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.registry import Registry
from fhir_exchange.settings import Settings

BASE = "http://127.0.0.1:8080/fhir"  # what the demo uses without FHIR_EXCHANGE_PUBLIC_BASE_URL


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One demo run for the module: its data dir and its output."""
    data = tmp_path_factory.mktemp("demo")
    capture = pytest.MonkeyPatch()
    capture.delenv("FHIR_EXCHANGE_PUBLIC_BASE_URL", raising=False)
    capture.delenv("FHIR_EXCHANGE_STORE_URL", raising=False)
    lines: list[str] = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(str(x) for x in a)))
    try:
        assert main(["demo", "--data-dir", str(data)]) == 0
    finally:
        capture.undo()
    return data, "\n".join(lines)


class Store:
    """The demo's store, opened again (authentication on) to look at it as the system or an institution."""

    def __init__(self, data: Path) -> None:
        settings = Settings.from_env(data_dir=data, auth=True)
        self.svc = build_services(settings, load_definitions(settings))
        self.router = build_router(self.svc)

    async def __aenter__(self) -> Store:
        await self.svc.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.svc.close()

    async def get(self, path: str, query: list[tuple[str, str]] | None = None, actor: Actor = SYSTEM) -> Any:
        try:
            resp = await self.router.dispatch(FhirRequest("GET", path, query or [], base_url=BASE, actor=actor))
        except FhirError as err:
            return err.status
        return resp.json()

    async def institutions(self) -> dict[str, str]:
        registry = Registry(self.svc.store)
        return {i.name: i.organization for i in await registry.institutions(instant(self.svc.clock.now()))}


def as_(org: str) -> Actor:
    return Actor(institution=org, client_id="test", scopes=frozenset({"system/*.cruds"}))


def ids(output: str, pattern: str) -> list[str]:
    return re.findall(pattern, output)


def test_the_demo_prints_each_step_and_a_summary(demo: tuple[Path, str]) -> None:
    _, out = demo
    assert "Seeding 26 institutions in three networks" in out
    assert "23 network affiliations" in out and "23 patients each with a consent" in out
    assert [n for n in range(1, 7) if f"[REST {n}]" in out] == [1, 2, 3, 4, 5, 6]
    assert [n for n in range(1, 7) if f"[messages {n}]" in out] == [1, 2, 3, 4, 5, 6]
    for event in ("consult-request", "consult-status-update", "consult-communication", "consult-report"):
        assert f"sends {event}" in out
    assert re.search(r"Isolation: 한빛대학교병원 reads its consult's patient: 200; .*: 404", out)
    summary = [line for line in out.splitlines() if "requested 1, accepted 1" in line]
    assert len(summary) == 2 and all("completed 1" in line and "transfers avoided 1" in line for line in summary)
    assert "한빛대학교병원 ← 가온요양병원, 신경과" in out and "늘봄대학교병원 ← 바다재활병원, 재활의학과" in out
    assert all(len(line) < 400 for line in out.splitlines())  # one readable line per step
    assert "Done in" in out.splitlines()[-1]


def test_the_rest_consult_is_completed(demo: tuple[Path, str]) -> None:
    data, out = demo
    (sr,) = ids(out, r"\[REST 6\].* completes (ServiceRequest/[0-9a-f-]+)")
    (task,) = ids(out, r"\[REST 5\].* completes (Task/[0-9a-f-]+)")

    async def check() -> None:
        async with Store(data) as store:
            orgs = await store.institutions()
            request, done = await store.get(sr), await store.get(task)
            assert request["status"] == "completed" and done["status"] == "completed"
            assert done["owner"]["reference"].startswith("PractitionerRole/")
            note = await store.get(done["output"][0]["valueReference"]["reference"])
            assert note["category"][0]["coding"][0]["code"] == "manage-locally"
            questions = await store.get("Communication", [("based-on", sr)])
            assert sorted(e["resource"]["category"][0]["coding"][0]["code"] for e in questions["entry"]) == [
                "consult-answer", "consult-question"]
            # the requester reads what the consultant wrote; every write has its Provenance
            requester = as_(orgs["가온요양병원"])
            assert (await store.get(f"DocumentReference/{note['id']}", actor=requester))["id"] == note["id"]
            provenance = await store.get("Provenance", [("target", task)])
            assert len(provenance["entry"]) >= 4

    asyncio.run(check())


def test_the_message_consult_reached_its_report(demo: tuple[Path, str]) -> None:
    data, out = demo
    (task,) = ids(out, r"consult-report: (Task/[0-9a-f-]+) completed")

    async def check() -> None:
        async with Store(data) as store:
            done = await store.get(task)
            assert done["status"] == "completed"
            history = await store.get(f"{task}/_history", [("_count", "20")])
            statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
            assert statuses[0] == "requested" and statuses[-1] == "completed" and "accepted" in statuses

    asyncio.run(check())


def test_isolation_holds_between_the_networks(demo: tuple[Path, str]) -> None:
    """The consultant institution reads its consult's patient (a grant), never another hub's patients."""
    data, _ = demo

    async def check() -> None:
        async with Store(data) as store:
            orgs = await store.institutions()
            assert len(orgs) == 26
            affiliations = await store.get("OrganizationAffiliation", [("_summary", "count")])
            assert affiliations["total"] == 23
            hanbit = as_(orgs["한빛대학교병원"])
            seen = await store.get("Patient", [("_count", "100")], actor=hanbit)
            assert len(seen.get("entry", [])) == 1, "only the patient of its consult"
            everyone = await store.get("Patient", [("_count", "100")])
            assert len(everyone["entry"]) == 23
            for entry in everyone["entry"]:
                pid = entry["resource"]["id"]
                if pid != seen["entry"][0]["resource"]["id"]:
                    assert await store.get(f"Patient/{pid}", actor=hanbit) == 404
            # a partner of one network does not read another partner's patients either
            other = as_(orgs["나래요양병원"])
            assert len((await store.get("Patient", [("_count", "100")], actor=other)).get("entry", [])) == 1

    asyncio.run(check())


def test_the_demo_wants_a_fresh_data_dir(demo: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = demo
    assert main(["demo", "--data-dir", str(data)]) == 1
    assert "fresh --data-dir" in capsys.readouterr().err


# -- the message consult is a consult like the other ---------------------------------------------------

def test_the_consultant_reads_the_task_of_the_message_consult(demo: tuple[Path, str]) -> None:
    """A message names the request by its full URL (cx-bdl-1); the server keeps the link as ``Type/id``, so
    the workflow finds the Task of the request and grants it to the consultant."""
    data, out = demo
    (task,) = ids(out, r"consult-report: (Task/[0-9a-f-]+) completed")

    async def check() -> None:
        async with Store(data) as store:
            hub = as_((await store.institutions())["늘봄대학교병원"])
            seen = await store.get(task, actor=hub)
            assert seen != 404 and seen["focus"]["reference"].startswith("ServiceRequest/")

    asyncio.run(check())


def test_the_requester_completed_the_message_consult(demo: tuple[Path, str]) -> None:
    data, out = demo
    (sr,) = ids(out, r"\[messages 1\].*: (ServiceRequest/[0-9a-f-]+)")
    assert f"completes {sr}" in out

    async def check() -> None:
        async with Store(data) as store:
            requester = as_((await store.institutions())["바다재활병원"])
            assert (await store.get(sr, actor=requester))["status"] == "completed"
            notes = await store.get("DocumentReference", [("related", sr)], actor=requester)
            assert len(notes["entry"]) == 1, "the requester reads the consultant's note"

    asyncio.run(check())
