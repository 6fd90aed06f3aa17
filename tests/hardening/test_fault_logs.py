"""Issue 14, "Logs": each fault is one clear log line (no traceback) and the right answer — a full disk
(503, once a minute), MongoDB unreachable (503, once a minute), a client that disconnects mid-upload
(one line), and a start on an unusable data directory or a full disk (a message and status 1, no
traceback). The full disks are real: a small tmpfs in a mount namespace of the server's own (skipped
where that is not permitted)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fhir_exchange.api.app import create_app
from fhir_exchange.errors import Category
from fhir_exchange.settings import Settings
from fhir_exchange.store import mongo_schema
from fhir_exchange.store import sqlite as sqlite_store
from tests.conftest import CACHE_DIR
from tests.hardening.test_slow_clients import Serve
from tests.mongo_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_full_disk_is_503_and_one_log_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    sqlite_store._logged_at.clear()
    with caplog.at_level(logging.ERROR, logger="fhir_exchange.store.sqlite"):
        errors = [sqlite_store._translate(sqlite3.OperationalError("database or disk is full")) for _ in range(5)]
    assert {e.category for e in errors} == {Category.TRANSIENT}
    assert errors[0].status == 503 and errors[0].headers["Retry-After"]
    lines = [r for r in caplog.records if "disk is full" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


async def test_mongodb_unreachable_is_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # One line a minute per process: another test in this process may have written this minute's.
    mongo_schema._unreachable_logged[0] = -120.0
    url = f"mongodb://127.0.0.1:{free_port()}/gone?serverSelectionTimeoutMS=200"
    app = create_app(Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), store_url=url, auth=False))
    await app.state.services.store.open()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t/fhir") as client:
            with caplog.at_level(logging.INFO):
                for _ in range(3):
                    assert (await client.get("/Patient/p1")).status_code == 503
    finally:
        await app.state.services.store.close()
    # Besides the start-up warning: one line for the requests, not one per request.
    lines = [r for r in caplog.records if "MongoDB is unreachable (requests are answered 503)" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_a_client_disconnecting_mid_upload_is_one_line(tmp_path: Path) -> None:
    server = Serve(tmp_path, {})
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                          b"Content-Length: 100000\r\n\r\n{\"resourceType\":\"Pat")
                time.sleep(0.2)
        time.sleep(0.5)
        assert httpx.get(f"{server.base}/metadata", timeout=10).status_code == 200
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log and "Unhandled error" not in log, log[-3000:]
    assert log.count("disconnected before sending its whole body") == 3


def test_starting_on_an_unusable_data_dir_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**os.environ, "FHIR_EXCHANGE_CACHE_DIR": str(CACHE_DIR), "FHIR_EXCHANGE_AUTH": "off"}
    env.pop("FHIR_EXCHANGE_STORE_URL", None)
    done = subprocess.run([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(free_port()),
                           "--data-dir", str(blocker / "data")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot start: the data directory" in done.stderr and "Not a directory" in done.stderr


def test_an_invalid_synchronous_setting_is_refused_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "FHIR_EXCHANGE_CACHE_DIR": str(CACHE_DIR), "FHIR_EXCHANGE_AUTH": "off",
           "FHIR_EXCHANGE_SQLITE_SYNCHRONOUS": "sometimes"}
    env.pop("FHIR_EXCHANGE_STORE_URL", None)
    done = subprocess.run([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "data")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "sqlite_synchronous must be one of full, normal, extra" in done.stderr


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_mount_tmpfs(),
                                 reason="needs a private mount namespace (root, unshare -m) for a small tmpfs")


def _serve_on_tmpfs(mountpoint: Path, size: str, fill: bool, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``serve`` in a mount namespace of its own, its data directory on a tmpfs of ``size`` (filled
    first when ``fill``): a real full disk without touching the machine's."""
    mountpoint.mkdir()
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" || exit 99; '
    if fill:
        script += 'dd if=/dev/zero of="$0/fill" bs=4k 2>/dev/null; '
    script += 'shift; exec "$@"'
    # One process: the once-a-minute log line is per worker process.
    env = {**os.environ, "FHIR_EXCHANGE_CACHE_DIR": str(CACHE_DIR), "FHIR_EXCHANGE_AUTH": "off",
           "FHIR_EXCHANGE_RATE_LIMIT": "0", "FHIR_EXCHANGE_WORKERS": "1"}
    env.pop("FHIR_EXCHANGE_STORE_URL", None)
    with open(log, "wb") as out:
        return subprocess.Popen(["unshare", "-m", "sh", "-c", script, str(mountpoint), size, sys.executable, "-m",
                                 "fhir_exchange", "serve", "--port", str(port), "--data-dir",
                                 str(mountpoint / "data")], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@needs_tmpfs
def test_a_disk_filling_up_is_503_and_one_log_line(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    proc = _serve_on_tmpfs(tmp_path / "disk", "6m", False, port, log)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        big = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": f"v{i:06d}"}
                                                         for i in range(6000)]}
        first = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "male"}, timeout=30)
        assert first.status_code == 201
        answers = []
        for _ in range(60):
            r = httpx.post(f"{base}/Patient", json=big, timeout=30)
            answers.append(r)
            if r.status_code != 201:
                break
        full = answers[-1]
        assert full.status_code == 503, [a.status_code for a in answers]
        assert full.headers["Retry-After"] and "storage is full" in full.json()["issue"][0]["diagnostics"]
        again = httpx.post(f"{base}/Patient", json=big, timeout=30)
        assert again.status_code == 503
        read = httpx.get(f"{base}/{first.headers['Location'].split('/fhir/', 1)[1]}", timeout=10)
        assert read.status_code == 200  # reads go on
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text(errors="replace")
    assert text.count("SQLite cannot write") == 1, text[-3000:]
    assert "Unhandled error" not in text


@needs_tmpfs
def test_starting_on_a_full_disk_says_so(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = _serve_on_tmpfs(tmp_path / "disk", "64k", True, free_port(), log)
    assert proc.wait(60) == 1
    text = log.read_text(errors="replace")
    assert "cannot start: the data directory" in text and "No space left on device" in text
    assert "Traceback" not in text
