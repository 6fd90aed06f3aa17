"""REST throughput of the real server over loopback, next to the bare-Starlette limit of the same machine.

Starts ``python -m fhir_exchange serve`` (uvicorn, SQLite store in a temporary folder) and a trivial
Starlette app returning a fixed JSON body, served the same way (``uvicorn.run``, one worker, same log
level), one after the other. Concurrent httpx clients then drive: GET of the bare app, create
(``POST /fhir/Patient``) and read (``GET /fhir/Patient/{id}``) of the real server, first open
(``FHIR_EXCHANGE_AUTH=off``), then secured as deployed: an institution and a client registered with the
command line, a SMART Backend Services token, isolation, a Provenance per write and an AuditEvent per
request. Each phase is bounded by a request count and a time limit. Prints requests/s, p50/p95
latency, the ratio to the bare limit, and the ratio of each secured phase to the same open one.

    .venv/bin/python bench/bench_rest.py                       # defaults: 3000 requests or 15 s per phase
    .venv/bin/python bench/bench_rest.py --count 500 --seconds 5 --concurrency 8   # quick

The client runs on the same machine and shares its cores with the server: the bare-Starlette row is
the ceiling of this client/server pair, so the ratio is what the FHIR layers cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.smart_client import get_token, keygen  # noqa: E402 - after the repository is on the path

BARE_APP = textwrap.dedent(
    """
    import sys

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    BODY = (b'{"resourceType":"Patient","id":"bare","meta":{"versionId":"1",'
            b'"lastUpdated":"2024-01-01T00:00:00.000Z"},"gender":"female",'
            b'"name":[{"family":"Kim","given":["Minji"]}]}')

    async def fixed(request):
        return Response(BODY, media_type="application/fhir+json; charset=utf-8")

    app = Starlette(routes=[Route("/fhir/{path:path}", fixed, methods=["GET", "POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=10)
    """
)

PATIENT = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01",
           "name": [{"family": "Kim", "given": ["Minji"]}],
           "identifier": [{"system": "urn:oid:1.2.410.100", "value": "12345"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Result:
    name: str
    ok: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def drive(name: str, base: str, concurrency: int, count: int, seconds: float,
                make: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
                expect: int, headers: dict[str, str] | None = None) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as client:
        # Warm up connections (and lazy caches) outside the measurement.
        await asyncio.gather(*(make(client, -1 - n) for n in range(concurrency)))

        async def worker() -> None:
            nonlocal issued, errors
            while issued < count and time.perf_counter() < deadline:
                n = issued
                issued += 1
                t0 = time.perf_counter()
                try:
                    resp = await make(client, n)
                    ok = resp.status_code == expect
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(name, len(latencies), errors, elapsed, latencies)


def cli(data: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    run = subprocess.run([sys.executable, "-m", "fhir_exchange", *args, "--data-dir", str(data)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    out: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


async def phases(label: str, base: str, args: argparse.Namespace, headers: dict[str, str] | None = None
                 ) -> list[Result]:
    ids: list[str] = []

    async def create(c: httpx.AsyncClient, n: int) -> httpx.Response:
        resp = await c.post("/Patient", json=PATIENT)
        if resp.status_code == 201:
            ids.append(resp.json()["id"])
        return resp

    return [
        await drive(f"create {label}", base, args.concurrency, args.count, args.seconds, create, 201, headers),
        await drive(f"read   {label}", base, args.concurrency, args.count, args.seconds,
                    lambda c, n: c.get(f"/Patient/{ids[n % len(ids)]}"), 200, headers),
    ]


async def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    env = dict(os.environ, FHIR_EXCHANGE_LOG_LEVEL="warning", FHIR_EXCHANGE_RATE_LIMIT="0")
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
        bare_script = Path(tmp) / "bare_app.py"
        bare_script.write_text(BARE_APP)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(bare_script), str(bare_port)], cwd=ROOT)
        bare_base = f"http://127.0.0.1:{bare_port}/fhir"
        try:
            wait_ready(f"{bare_base}/metadata", bare)

            def bare_get(c: httpx.AsyncClient, n: int) -> Awaitable[httpx.Response]:
                return c.get("/Patient/bare")

            # The bare limit is measured before and after the server phases: on a shared machine the
            # two figures show how much the background load moved during the run.
            results.append(await drive("bare Starlette GET (before)", bare_base, args.concurrency, args.count,
                                       args.seconds, bare_get, 200))
            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port),
                                       "--data-dir", str(Path(tmp) / "open")], cwd=ROOT,
                                      env=dict(env, FHIR_EXCHANGE_AUTH="off"))
            try:
                base = f"http://127.0.0.1:{port}/fhir"
                wait_ready(f"{base}/metadata", server)
                results.extend(await phases("(open)", base, args))
            finally:
                stop(server)
            secured = Path(tmp) / "secured"
            port = free_port()
            base = f"http://127.0.0.1:{port}/fhir"
            secure_env = dict(env, FHIR_EXCHANGE_AUTH="on", FHIR_EXCHANGE_PUBLIC_BASE_URL=base)
            org = cli(secured, secure_env, "institution", "add", "--name", "Bench", "--hira-id", "12345678",
                      "--connection", "emr")
            jwks, pem = keygen("bench")
            (Path(tmp) / "bench.jwks.json").write_text(json.dumps(jwks))
            client = cli(secured, secure_env, "client", "add", "--institution", str(org["organization"]),
                         "--jwks", str(Path(tmp) / "bench.jwks.json"))
            server = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port),
                                       "--data-dir", str(secured)], cwd=ROOT, env=secure_env)
            try:
                wait_ready(f"{base}/metadata", server)
                token = get_token(str(client["client_id"]), pem, str(client["token_endpoint"]), "system/*.cruds",
                                  kid="bench")
                headers = {"Authorization": f"Bearer {token['access_token']}"}
                results.extend(await phases("(auth + audit)", base, args, headers))
            finally:
                stop(server)
            results.append(await drive("bare Starlette GET (after)", bare_base, args.concurrency, args.count,
                                       args.seconds, bare_get, 200))
        finally:
            stop(bare)
    return results


def table(results: list[Result], args: argparse.Namespace) -> str:
    bare = max(r.rate for r in results if r.name.startswith("bare"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"fhir-exchange REST bench: {args.concurrency} concurrent clients, at most {args.count} requests or "
        f"{args.seconds:g} s per phase, loopback, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load average {load:.1f} at the end",
        "'vs bare' divides by the better of the two bare-Starlette rows.",
        "",
        "'vs open' divides a secured phase by the same phase of the open server (aim: at least 0.85).",
        "",
        f"{'phase':<30}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'vs bare':>9}"
        f"{'vs open':>9}",
    ]
    by_name = {r.name: r for r in results}
    for r in results:
        ratio = r.rate / bare if bare else float("nan")
        open_ = by_name.get(r.name.replace("(auth + audit)", "(open)")) if "(auth" in r.name else None
        vs_open = f"{r.rate / open_.rate:>9.2f}" if open_ and open_.rate else f"{'':>9}"
        lines.append(f"{r.name:<30}{r.ok:>9}{r.errors:>8}{r.rate:>10.0f}{r.pct(0.5):>9.2f}{r.pct(0.95):>9.2f}"
                     f"{ratio:>9.2f}{vs_open}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000, help="requests per phase at most (default 3000)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per phase at most (default 15)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent client tasks (default 16)")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(table(results, args))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
