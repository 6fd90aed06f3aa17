"""A small consult network for the portal tests, written to a real SQLite store exactly as the command
line does (``institution add``, ``network add``, ``user add``): a hub (a university hospital, internal
medicine), a partner nursing hospital affiliated with it, and a third institution outside the network,
each with portal users."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fhir_exchange.api.app import build_router, build_services
from fhir_exchange.api.enrolment import add_institution, add_network
from fhir_exchange.definitions import Definitions
from fhir_exchange.portal.accounts import add_user
from fhir_exchange.security.registry import Registry
from fhir_exchange.security.users import Users
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR

PASSWORD = "correct horse battery"
BASE = "http://127.0.0.1/fhir"


@dataclass(frozen=True)
class Seeded:
    hub: str
    partner: str
    other: str
    users: dict[str, str]  # username -> PractitionerRole id


def portal_settings(data_dir: Path, **changes: object) -> Settings:
    values: dict[str, object] = {"data_dir": data_dir, "cache_dir": str(CACHE_DIR), "auth": True,
                                 "portal_poll_seconds": 1.0, **changes}
    return Settings(**values)  # type: ignore[arg-type]


async def seed(data_dir: Path, definitions: Definitions) -> Seeded:
    settings = portal_settings(data_dir)
    svc = build_services(settings, definitions)
    router = build_router(svc)
    await svc.open()
    try:
        registry, users = Registry(svc.store), Users(svc.store)
        orgs = {}
        for key, name, hira in (("hub", "다라대학교병원", "87654321"), ("partner", "가나요양병원", "12345678"),
                                ("other", "마바요양병원", "11223344")):
            added = await add_institution(router, registry, name=name, hira_id=hira, connection="portal",
                                          endpoint_address=None, base_url=BASE)
            orgs[key] = str(added["organization"])
        await add_network(router, registry, hub=orgs["hub"], partner=orgs["partner"], specialties=["01", "02"],
                          base_url=BASE)
        roles = {}
        for username, org, name, dept in (("kim.hub", "hub", "김내과", "01"), ("lee.hub", "hub", "이내과", "01"),
                                          ("park.partner", "partner", "박요양", None),
                                          ("choi.other", "other", "최다른", None)):
            made = await add_user(router, registry, users, institution=orgs[org], username=username,
                                  password=PASSWORD, name=name, practitioner_role=None, department=dept,
                                  base_url=BASE)
            roles[username] = str(made["practitioner_role"])
        return Seeded(orgs["hub"], orgs["partner"], orgs["other"], roles)
    finally:
        await svc.close()


def seed_now(data_dir: Path, definitions: Definitions) -> Seeded:
    """:func:`seed` from synchronous code, even where an event loop runs (Playwright's sync API keeps one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, seed(data_dir, definitions)).result()
