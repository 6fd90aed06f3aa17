"""End to end: a real ``python -m fhir_exchange serve`` process, spoken to over TCP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.e2e.conftest import Server, cli_env, start_server

SYS = "urn:oid:1.2.410.300"


def test_create_read_search_over_tcp(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=10) as c:
        created = c.post("/Patient", json={"resourceType": "Patient", "gender": "male",
                                           "identifier": [{"system": SYS, "value": "e2e-1"}]})
        assert created.status_code == 201
        loc = created.headers["location"]
        assert loc.startswith(server.base + "/Patient/")
        read = c.get(loc.rsplit("/_history", 1)[0])
        assert read.status_code == 200 and read.json() == created.json()
        found = c.get("/Patient", params={"identifier": f"{SYS}|e2e-1"}).json()
        assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == created.json()["id"]
        assert found["entry"][0]["fullUrl"].startswith(server.base)
        meta = c.get("/metadata")
        assert meta.json()["fhirVersion"] == "4.0.1"
        bad = c.post("/Patient", content=b"{oops", headers={"content-type": "application/fhir+json"})
        assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_sigterm_exits_cleanly_and_data_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        with httpx.Client(base_url=first.base, timeout=10) as c:
            put = c.put("/Organization/hosp-1", json={"resourceType": "Organization", "id": "hosp-1",
                                                     "name": "Regional Medical Centre"})
            assert put.status_code == 201
            c.put("/Organization/hosp-1", json={"resourceType": "Organization", "id": "hosp-1", "name": "RMC"})
        started = time.monotonic()
        assert first.stop() == 0
        assert time.monotonic() - started < 15
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    second = start_server(data)
    try:
        with httpx.Client(base_url=second.base, timeout=10) as c:
            read = c.get("/Organization/hosp-1")
            assert read.status_code == 200
            assert read.json()["name"] == "RMC" and read.json()["meta"]["versionId"] == "2"
            assert c.get("/Organization/hosp-1/_history/1").json()["name"] == "Regional Medical Centre"
    finally:
        assert second.stop() == 0


def test_load_a_folder_prints_a_summary(tmp_path: Path) -> None:
    folder = tmp_path / "examples"
    (folder / "nested").mkdir(parents=True)
    (folder / "patient.json").write_bytes(orjson.dumps(
        {"resourceType": "Patient", "id": "loaded-1", "gender": "female"}))
    (folder / "org.json").write_bytes(orjson.dumps({"resourceType": "Organization", "name": "No id"}))
    (folder / "nested" / "obs.json").write_bytes(orjson.dumps(
        {"resourceType": "Observation", "id": "obs-1", "status": "final", "code": {"text": "BP"}}))
    (folder / "broken.json").write_bytes(b"{not json")
    (folder / "invalid.json").write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p2", "gender": "robot"}))
    (folder / "notes.txt").write_text("ignored: not a .json file")
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-m", "fhir_exchange", "load", str(folder), "--data-dir", str(data)],
                         env=cli_env(), capture_output=True, text=True, timeout=120)
    assert "Loaded 3 of 5 files" in run.stdout, (run.stdout, run.stderr)
    assert "(2 failed)" in run.stdout
    assert run.returncode == 1  # some files failed
    assert "broken.json" in run.stderr and "invalid.json" in run.stderr
    srv = start_server(data)
    try:
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            assert c.get("/Patient/loaded-1").json()["gender"] == "female"
            assert c.get("/Observation/obs-1").status_code == 200
            assert c.get("/Organization").json()["total"] == 1
            assert c.get("/Patient/p2").status_code == 404
    finally:
        assert srv.stop() == 0
    again = subprocess.run([sys.executable, "-m", "fhir_exchange", "load", str(folder / "patient.json"),
                            "--data-dir", str(data)], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Loaded 1 of 1 files" in again.stdout


async def test_sigterm_under_load_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    """Writes in flight at SIGTERM either complete (and are then durable) or fail at the client; none
    that was acknowledged with 201 may be missing after a restart."""
    import asyncio
    import signal

    data = tmp_path / "data"
    srv = start_server(data)
    acknowledged: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=srv.base, timeout=20) as c:

            async def writer(n: int) -> None:
                for k in range(1000):
                    try:
                        resp = await c.post("/Patient", json={"resourceType": "Patient",
                                                              "name": [{"family": f"w{n}-{k}"}]})
                    except httpx.HTTPError:
                        return
                    if resp.status_code != 201:
                        return
                    acknowledged.append(resp.json()["id"])

            tasks = [asyncio.create_task(writer(n)) for n in range(8)]
            while len(acknowledged) < 40:
                await asyncio.sleep(0.02)
            srv.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert await asyncio.to_thread(srv.proc.wait, 20) == 0
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
    again = start_server(data)
    try:
        async with httpx.AsyncClient(base_url=again.base, timeout=20) as c:
            statuses = [(await c.get(f"/Patient/{rid}")).status_code for rid in acknowledged]
            assert statuses == [200] * len(acknowledged)
            assert (await c.get("/Patient", params={"_summary": "count"})).json()["total"] >= len(acknowledged)
    finally:
        assert again.stop() == 0


def test_head_has_the_headers_of_get_and_no_body(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=10) as c:
        c.put("/Patient/h", json={"resourceType": "Patient", "id": "h", "gender": "other"})
        for path, status in (("/Patient/h", 200), ("/Patient/none", 404)):
            get, head = c.get(path), c.head(path)
            assert get.status_code == head.status_code == status
            assert head.content == b""
            for name in ("content-type", "content-length", "etag", "last-modified"):
                assert head.headers.get(name) == get.headers.get(name), name


def test_bad_settings_end_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    for name, value in (("FHIR_EXCHANGE_PORT", "eighty"), ("FHIR_EXCHANGE_LOG_LEVEL", "chatty")):
        env = {**cli_env(), name: value}
        run = subprocess.run([sys.executable, "-m", "fhir_exchange", "serve", "--data-dir", str(tmp_path)],
                             env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert "invalid setting" in run.stderr and "Traceback" not in run.stderr
