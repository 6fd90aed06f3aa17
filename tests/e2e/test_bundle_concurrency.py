"""20 clients post overlapping transactions at once to a real ``python -m fhir_exchange serve``:
conditional creates on the same identifiers never duplicate, nothing deadlocks, no update is lost."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SYS = "urn:oid:1.2.410.100.1"
CLIENTS = 20
SHARED = 8  # identifiers every transaction races for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "FHIR_EXCHANGE_CACHE_DIR": str(ROOT / ".pytest_cache" / "fhir-packages"),
           "FHIR_EXCHANGE_LOG_LEVEL": "warning", "FHIR_EXCHANGE_AUTH": "off"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_exchange", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _transaction(client_no: int) -> dict[str, object]:
    entries: list[dict[str, object]] = []
    for k in range(SHARED):
        value = f"shared-{(client_no + k) % SHARED}"  # same identifiers, different order per client
        entries.append({"fullUrl": f"urn:uuid:p-{k}",
                        "resource": {"resourceType": "Patient", "identifier": [{"system": SYS, "value": value}]},
                        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYS}|{value}"}})
        entries.append({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                     "identifier": [{"system": SYS, "value": f"obs-{client_no}-{k}"}],
                                     "subject": {"reference": f"urn:uuid:p-{k}"}},
                        "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def _increment(client: httpx.AsyncClient) -> int:
    """Read-modify-write of a shared counter through a transaction with ifMatch; retry on conflict."""
    attempts = 0
    while True:
        attempts += 1
        cur = (await client.get("/Basic/counter")).json()
        n = int(cur["code"]["text"])
        body = {"resourceType": "Basic", "id": "counter", "code": {"text": str(n + 1)}}
        r = await client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": body, "request": {"method": "PUT", "url": "Basic/counter",
                                           "ifMatch": f'W/"{cur["meta"]["versionId"]}"'}}]})
        if r.status_code == 200:
            return attempts
        assert r.status_code in (409, 412), r.text


async def _run(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as setup:
        r = await setup.put("/Basic/counter", json={"resourceType": "Basic", "id": "counter", "code": {"text": "0"}})
        assert r.status_code == 201

    async def one(no: int) -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            r = await c.post("", json=_transaction(no))
            await _increment(c)
            return r.status_code, len(r.json().get("entry", []))

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CLIENTS))), timeout=120)
    assert results == [(200, 2 * SHARED)] * CLIENTS
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for k in range(SHARED):
            found = (await c.get(f"/Patient?identifier={SYS}|shared-{k}")).json()
            assert found["total"] == 1, f"shared-{k} has {found['total']} Patients"
        patients = (await c.get("/Patient?_summary=count")).json()["total"]
        assert patients == SHARED
        obs = (await c.get("/Observation?_count=1000")).json()
        assert obs["total"] == CLIENTS * SHARED
        ids = {e["resource"]["subject"]["reference"] for e in obs["entry"]}
        assert len(ids) == SHARED  # every Observation points at one of the shared Patients
        counter = (await c.get("/Basic/counter")).json()
        assert counter["code"]["text"] == str(CLIENTS)  # no lost update
        assert counter["meta"]["versionId"] == str(CLIENTS + 1)


def test_concurrent_overlapping_transactions(server: str) -> None:
    asyncio.run(_run(server))
