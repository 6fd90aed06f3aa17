"""``fhir-exchange user add | list | disable | enable | unlock`` as a user runs them: real processes on a
real data directory, no server running; the account then signs in to a server on the same store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from starlette.testclient import TestClient

from fhir_exchange.api.app import build_router, build_services, create_app
from fhir_exchange.api.enrolment import add_institution
from fhir_exchange.definitions import Definitions
from fhir_exchange.security.registry import Registry
from tests.e2e.conftest import cli_env
from tests.portal.conftest import csrf_of
from tests.portal.network import BASE, portal_settings


def cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_exchange", *args, "--data-dir", str(data_dir)], input=stdin,
                          env={**cli_env(), "FHIR_EXCHANGE_AUTH": "on"}, capture_output=True, text=True, timeout=120)


def register_institution(data_dir: Path, definitions: Definitions) -> str:
    async def go() -> str:
        svc = build_services(portal_settings(data_dir), definitions)
        router = build_router(svc)
        await svc.open()
        try:
            added = await add_institution(router, Registry(svc.store), name="가나요양병원", hira_id="12345678",
                                          connection="portal", endpoint_address=None, base_url=BASE)
            return str(added["organization"])
        finally:
            await svc.close()

    return asyncio.run(go())


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout.strip().splitlines()[-1])


def test_user_commands(tmp_path: Path, definitions: Definitions) -> None:
    org = register_institution(tmp_path, definitions)  # in process: `institution add` has its own tests
    made = ok(cli(tmp_path, "user", "add", "--institution", org, "--username", "Park.Nurse", "--name", "박간호",
                  "--department", "01", "--password-stdin", stdin="a long passphrase\n"))
    assert made["username"] == "park.nurse" and made["institution"] == org and made["name"] == "박간호"
    assert made["practitioner_role"] and made["practitioner"]
    # A second account acting as an existing PractitionerRole of the institution.
    second = ok(cli(tmp_path, "user", "add", "--institution", org, "--username", "park2", "--practitioner-role",
                    made["practitioner_role"], "--password-stdin", stdin="another passphrase\n"))
    assert second["practitioner_role"] == made["practitioner_role"] and second["name"] == "박간호"
    # What is refused, with a message and exit status 1 (the rules themselves: test_users.py).
    refused = cli(tmp_path, "user", "add", "--institution", "nope", "--username", "x1", "--password-stdin",
                  stdin="a long passphrase\n")
    assert refused.returncode == 1 and "not a registered institution" in refused.stderr, refused.stderr
    listed = cli(tmp_path, "user", "list")
    assert listed.returncode == 0
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {r["username"] for r in rows} == {"park.nurse", "park2"}
    assert all("password_hash" not in r for r in rows)
    assert ok(cli(tmp_path, "user", "disable", "park.nurse"))["disabled"] is True

    app = create_app(portal_settings(tmp_path), definitions=definitions)
    with TestClient(app) as client:
        def sign_in(password: str) -> int:
            page = client.get("/portal/login")
            return client.post("/portal/login", data={"csrf": csrf_of(page.text), "username": "park.nurse",
                                                      "password": password}, follow_redirects=False).status_code

        assert sign_in("a long passphrase") == 401  # disabled
        ok(cli(tmp_path, "user", "enable", "park.nurse"))
        assert sign_in("a long passphrase") == 303
        for _ in range(5):
            sign_in("wrong")
        assert sign_in("a long passphrase") == 403  # locked
        assert ok(cli(tmp_path, "user", "unlock", "park.nurse"))["locked_until"] is None
        assert sign_in("a long passphrase") == 303
