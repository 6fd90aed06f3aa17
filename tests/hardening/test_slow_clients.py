"""Issue 14, "Slow and greedy clients", against a real ``fhir-exchange serve`` process: connections that
never finish their request head are closed after the header timeout and do not keep a normal client
from being served; running out of file descriptors is one log line, not a traceback per accept; a
malformed request line is answered with an OperationOutcome (api/protocol.py)."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import CACHE_DIR
from tests.mongo_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SLOW = 250
HEADER_TIMEOUT = 2


class Serve:
    def __init__(self, tmp: Path, env: dict[str, str], nofile: int | None = None) -> None:
        self.port = free_port()
        self.log_path = tmp / "server.log"
        # One process: the cap of connections and the once-a-minute log lines are per worker process.
        full_env = {**os.environ, "FHIR_EXCHANGE_CACHE_DIR": str(CACHE_DIR), "FHIR_EXCHANGE_AUTH": "off",
                    "FHIR_EXCHANGE_LOG_LEVEL": "info", "FHIR_EXCHANGE_WORKERS": "1", **env}
        full_env.pop("FHIR_EXCHANGE_STORE_URL", None)
        limit: Callable[[], None] | None = None
        if nofile is not None:
            def limit() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fhir_exchange", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(tmp / "data")], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=limit)
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        deadline = time.monotonic() + 40
        while True:
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(env: dict[str, str] | None = None, nofile: int | None = None) -> Serve:
        s = Serve(tmp_path, env or {}, nofile)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def slow_sockets(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that send the start of a request head and then nothing."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        out.append(s)
    return out


def test_slow_connections_do_not_stop_a_normal_client(serve: Callable[..., Serve]) -> None:
    server = serve({"FHIR_EXCHANGE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})
    socks = slow_sockets(server.port, SLOW)
    try:
        t0 = time.monotonic()
        r = httpx.get(f"{server.base}/metadata", timeout=10)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 3
        time.sleep(HEADER_TIMEOUT + 1.5)
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                closed += s.recv(100) == b""
            except (ConnectionResetError, TimeoutError):
                closed += isinstance(sys.exc_info()[1], ConnectionResetError)
        assert closed == SLOW  # every slow connection was closed by the server after the header timeout
    finally:
        for s in socks:
            s.close()
    r = httpx.get(f"{server.base}/metadata", timeout=10)
    assert r.status_code == 200
    server.stop()
    log = server.log()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "did not send a request head" in line]
    assert 1 <= len(lines) <= 2, log[-3000:]


MALFORMED = [b"GET /fhir/Patient\x01bad HTTP/1.1", b"GET /fhir/Pat\xffient HTTP/1.1", b"G\xc3T /fhir/metadata HTTP/1.1",
             b"GET /fhir/metadata HTTP/9"]


def test_a_malformed_request_line_gets_an_operation_outcome(serve: Callable[..., Serve]) -> None:
    server = serve()
    for line in MALFORMED:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), (line, data)
        assert b"application/fhir+json" in head.lower()
        outcome = orjson.loads(body)
        assert outcome["resourceType"] == "OperationOutcome"
        assert "malformed" in outcome["issue"][0]["diagnostics"]
    server.stop()
    assert server.log().count("Malformed HTTP requests were answered 400") == 1  # not one per request


def test_running_out_of_file_descriptors_is_logged_once_without_tracebacks(serve: Callable[..., Serve]) -> None:
    server = serve(nofile=160)
    socks: list[socket.socket] = []
    try:
        for _ in range(400):  # the server's descriptors run out well before this
            try:
                socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
            except OSError:
                break
        time.sleep(3)  # asyncio retries accepting once a second: three attempts at least
    finally:
        for s in socks:
            s.close()
    time.sleep(1.5)
    r = httpx.get(f"{server.base}/metadata", timeout=10)
    assert r.status_code == 200  # it accepts again once descriptors are free
    server.stop()
    log = server.log()
    # asyncio's own line ("socket.accept() out of system resource") came with a traceback per retry.
    assert "socket.accept()" not in log
    assert "Too many open files" in log  # said, with its cause
    assert log.count("out of system resources") <= 2, log[-3000:]


def test_a_body_that_stops_arriving_is_answered_400_after_the_body_timeout(serve: Callable[..., Serve]) -> None:
    server = serve({"FHIR_EXCHANGE_BODY_TIMEOUT": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"resourceType\":")
        t0 = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - t0 < 5
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data
    issue = orjson.loads(body)["issue"][0]
    assert issue["code"] == "timeout" and "not received within 1 s" in issue["diagnostics"]
    server.stop()
    assert "Traceback" not in server.log()


def test_connections_over_the_cap_are_answered_503(serve: Callable[..., Serve]) -> None:
    server = serve({"FHIR_EXCHANGE_MAX_CONNECTIONS": "20"})
    socks = slow_sockets(server.port, 25)
    try:
        for _ in range(3):
            assert httpx.get(f"{server.base}/metadata", timeout=10).status_code == 503
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert httpx.get(f"{server.base}/metadata", timeout=10).status_code == 200
    server.stop()
    log = server.log()
    assert log.count("Connections over the limit") == 1 and "Exceeded concurrency limit" not in log
