"""Operations tests: real server processes (uvicorn) with logging as deployed, the command line, the app."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.e2e.conftest import cli_env, free_port


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    root: str  # http://127.0.0.1:PORT
    output: Path  # stdout and stderr together (a file: a pipe nobody reads would block the server's logging)

    def stop(self) -> bytes:
        """SIGTERM, wait, and everything it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.output.read_bytes()


def serve(data_dir: Path, *options: str, verify: ssl.SSLContext | None = None, **env: str) -> Process:
    """``python -m fhir_exchange serve`` on a free port, its output captured; waits until it is ready.
    ``verify``: TLS is served (``--certfile`` among the options), trusted through this context."""
    port = free_port()
    environ = {**cli_env(), "FHIR_EXCHANGE_LOG_LEVEL": "info", **env}
    output = data_dir.parent / f"serve-{port}.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port),
                                 "--data-dir", str(data_dir), *options], env=environ, stdout=sink,
                                stderr=subprocess.STDOUT)
    root = f"{'https' if verify else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{output.read_text()}")
        try:
            if httpx.get(f"{root}/readyz", timeout=2, verify=verify or True).status_code == 200:
                return Process(proc, root, output)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become ready in time")


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """One ``fhir-exchange`` command, stdout and stderr captured separately."""
    return subprocess.run([sys.executable, "-m", "fhir_exchange", *args], env={**cli_env(), **env},
                          capture_output=True, timeout=300)


@pytest.fixture
async def started_app(settings: Settings, definitions: Definitions) -> AsyncIterator[Starlette]:
    """The app with its store open and readiness started, without the lifespan's background tasks (the
    change feed follower, the sweep, the notifier): the end-to-end tests run those in real processes,
    and every one of them waits for ``/readyz`` (all checks ok) before it starts."""
    app = create_app(settings, definitions=definitions)
    await app.state.services.open()
    app.state.health.started()
    try:
        yield app
    finally:
        await app.state.services.close()


@pytest.fixture
async def ops_client(started_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=started_app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
