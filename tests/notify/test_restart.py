"""A restart loses no pending delivery: a real ``fhir-exchange serve`` process whose receiver is down is
killed (SIGKILL: no orderly shutdown), a new process on the same data directory takes over the delivery
lease and the stored cursor, and the receiver, once back, gets every notification in commit order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, start_server
from tests.notify.helpers import status_of, subscription
from tests.notify.receiver import Receiver


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"ALLOW_PRIVATE_ENDPOINTS": "true", "NOTIFY_INTERVAL": "0.1", "NOTIFY_RETRY_MIN": "0.2",
                        "NOTIFY_RETRY_MAX": "0.5", "NOTIFY_ERROR_AFTER": "2", "NOTIFY_LEASE": "1.5"}.items():
        monkeypatch.setenv(f"FHIR_EXCHANGE_{name}", value)
    yield


async def test_a_killed_server_loses_no_pending_delivery(tmp_path: Path, fast_env: None) -> None:
    receiver = await Receiver().start()
    servers: list[Server] = []
    try:
        first = start_server(tmp_path / "data")
        servers.append(first)
        async with httpx.AsyncClient(base_url=first.base) as http:
            r = await http.post("/Subscription", json=subscription("Patient?family=Kim", receiver.url,
                                                                   payload="application/fhir+json"))
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            await status_of(http, sid, "active")
            await receiver.stop()
            ids = []
            for given in ("first", "second", "third"):
                r = await http.post("/Patient", json={"resourceType": "Patient",
                                                      "name": [{"family": "Kim", "given": [given]}]})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            await status_of(http, sid, "error")  # attempts were made and failed
        first.proc.kill()
        first.proc.wait(10)

        await receiver.start()  # back, while no server runs: nothing can arrive yet
        await asyncio.sleep(0.3)
        assert receiver.received == []
        second = start_server(tmp_path / "data")
        servers.append(second)
        hits = await receiver.wait_for(3, timeout=10.0)
        assert [h.path for h in hits] == [f"/Patient/{i}" for i in ids]
        async with httpx.AsyncClient(base_url=second.base) as http:
            await status_of(http, sid, "active")
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 3  # each once: the cursor moved past what was delivered
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(10)
        await receiver.stop()
