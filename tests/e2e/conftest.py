"""A real ``fhir-exchange serve`` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import CACHE_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["FHIR_EXCHANGE_CACHE_DIR"] = str(CACHE_DIR)
    env["FHIR_EXCHANGE_LOG_LEVEL"] = "warning"
    env["FHIR_EXCHANGE_AUTH"] = "off"  # the open server; authentication has its own end-to-end tests
    env.pop("FHIR_EXCHANGE_STORE_URL", None)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    data_dir: Path

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start_server(data_dir: Path, port: int | None = None, timeout: float = 30) -> Server:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return Server(proc, base, data_dir)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not answer in time")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "data")
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
