"""REST throughput of the real server over loopback, next to the bare-Starlette limit of the same machine.

For each worker count (``--workers 1,2``) it starts ``python -m fhir_exchange serve --workers N``
(uvicorn, SQLite store in a temporary folder, validation on, ``synchronous=FULL``) with
authentication off and drives create (``POST /fhir/Patient``) and read by id (``GET
/fhir/Patient/{id}``) at 1 and at ``--concurrency`` (16) connections; then a bare Starlette app
serving the same Patient's bytes with orjson on the same uvicorn workers (h11, asyncio, N processes)
is driven the same way. Finally the secured server as deployed (an institution and a client registered
with the command line, a SMART Backend Services token, isolation, a Provenance per write and an
AuditEvent per request) at the highest worker count. Prints requests/s, p50/p95 latency, the ratio to
the bare app at the same workers and connections, the ratio of each secured phase to the same open
one, and how each workload scales from the first to the last worker count.

The load generator is ``wrk`` (one thread) when installed, else asyncio httpx clients in this process
(``--client httpx``), which cost far more CPU per request. Either way it shares the machine's cores
with the server: the bare row is the ceiling of this client/server pair, not of the server alone.

    .venv/bin/python bench/bench_rest.py                       # 10 s per phase, workers 1 and 2
    .venv/bin/python bench/bench_rest.py --seconds 3           # quick (./dev bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.smart_client import get_token, keygen  # noqa: E402 - after the repository is on the path

# The bare limit: Starlette answering a fixed document with orjson, on uvicorn's h11 protocol and asyncio
# loop (as fhir-exchange serve), with as many worker processes as the server phase it is compared with.
BARE_APP = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    DOC = orjson.loads(Path(__file__).with_name("body.json").read_bytes())

    async def fixed(request):
        return Response(orjson.dumps(DOC), media_type="application/fhir+json; charset=utf-8")

    app = Starlette(routes=[Route("/fhir/{path:path}", fixed, methods=["GET", "POST"])])

    if __name__ == "__main__":
        uvicorn.run("bare_app:app", host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[2]),
                    log_level="warning", access_log=False, http="h11", loop="asyncio",
                    timeout_graceful_shutdown=10)
    """
)

PATIENT = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01",
           "name": [{"family": "Kim", "given": ["Minji"]}],
           "identifier": [{"system": "urn:oid:1.2.410.100", "value": "12345"}]}

# wrk's report, one line written by the script's done() (latencies in microseconds).
WRK_DONE = textwrap.dedent(
    """
    done = function(summary, latency, requests)
      local e = summary.errors
      io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests,
        e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
        latency:percentile(50), latency:percentile(95)))
    end
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
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
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (Linux /proc; 0 elsewhere): the server's
    cost per request, which the load of a shared machine moves far less than its requests per second."""
    try:
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except OSError:
        return 0.0
    tree, total, changed = {pid}, 0, True
    while changed:
        changed = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                changed = True
    total = sum(stats[p][1] for p in tree if p in stats)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str  # bare | create | read, with " (auth + audit)" for the secured server
    workers: int
    connections: int
    ok: int
    errors: int
    seconds: float
    p50: float  # ms
    p95: float
    cpu: float = 0.0  # CPU seconds of the server's processes during the phase

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per request answered."""
        return self.cpu / self.ok * 1e6 if self.ok else float("nan")


@dataclass
class Load:
    """One phase: GETs of ``paths`` in turn, or POSTs of ``body``, for ``seconds`` on ``connections``."""

    base: str  # http://host:port
    paths: list[str]
    body: bytes | None = None
    headers: dict[str, str] | None = None
    expect: int = 200


def run_wrk(load: Load, connections: int, seconds: float, tmp: Path) -> tuple[int, int, float, float, float]:
    lines = []
    for name, value in {"Content-Type": "application/fhir+json", **(load.headers or {})}.items():
        lines.append(f'wrk.headers["{name}"] = {json.dumps(value)}')
    if load.body is not None:
        lines += ['wrk.method = "POST"', f"wrk.body = {json.dumps(load.body.decode())}",
                  f'local path = {json.dumps(load.paths[0])}',
                  'request = function() return wrk.format(nil, path) end']
    else:
        lines += ["local paths = {" + ",".join(json.dumps(p) for p in load.paths) + "}", "local i = 0",
                  "request = function() i = i + 1; return wrk.format(\"GET\", paths[(i % #paths) + 1]) end"]
    script = tmp / "phase.lua"
    script.write_text("\n".join(lines) + WRK_DONE)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s",
                          str(script), load.base], capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, errors, micros, p50, p95 = (int(g) for g in found.groups())
    return requests - errors, errors, micros / 1e6, p50 / 1000, p95 / 1000


async def run_httpx(load: Load, connections: int, seconds: float) -> tuple[int, int, float, float, float]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = issued = 0
    headers = {"Content-Type": "application/fhir+json", **(load.headers or {})}
    async with httpx.AsyncClient(base_url=load.base, limits=limits, timeout=30, headers=headers) as client:

        def one(n: int) -> Awaitable[httpx.Response]:
            if load.body is not None:
                return client.post(load.paths[0], content=load.body)
            return client.get(load.paths[n % len(load.paths)])

        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal issued, errors
            while time.perf_counter() < deadline:
                n, issued = issued, issued + 1
                t0 = time.perf_counter()
                try:
                    ok = (await one(n)).status_code == load.expect
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    pct = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return len(latencies), errors, elapsed, pct(0.5), pct(0.95)


async def measure(name: str, workers: int, load: Load, args: argparse.Namespace, tmp: Path, pid: int
                  ) -> list[Result]:
    results = []
    for connections in (1, args.concurrency):
        # Warm up: connections, lazy caches, the first pages of SQLite.
        await run_httpx(load, min(connections, 4), 0.5)
        cpu = cpu_seconds(pid)
        if args.client == "wrk":
            figures = await asyncio.to_thread(run_wrk, load, connections, args.seconds, tmp)
        else:
            figures = await run_httpx(load, connections, args.seconds)
        results.append(Result(name, workers, connections, *figures, cpu=cpu_seconds(pid) - cpu))
        print(f"  {name:<24} workers {workers} connections {connections:>3}: {results[-1].rate:8.0f} req/s",
              file=sys.stderr)
    return results


def cli(data: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    run = subprocess.run([sys.executable, "-m", "fhir_exchange", *args, "--data-dir", str(data)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    out: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def serve(data: Path, env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port), "--data-dir",
                             str(data), "--workers", str(workers)], cwd=ROOT, env=env)
    root = f"http://127.0.0.1:{port}"
    wait_ready(f"{root}/fhir/metadata", proc)
    return proc, root


async def server_phases(label: str, root: str, workers: int, args: argparse.Namespace, tmp: Path, pid: int,
                        headers: dict[str, str] | None = None) -> tuple[list[Result], bytes]:
    body = json.dumps(PATIENT).encode()
    async with httpx.AsyncClient(base_url=root, headers=headers, timeout=30) as c:
        ids = []
        for _ in range(200):  # the resources the reads go round
            resp = await c.post("/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"})
            resp.raise_for_status()
            ids.append(resp.json()["id"])
        sample = (await c.get(f"/fhir/Patient/{ids[0]}")).content
    results = []
    if "create" in args.workloads:
        results += await measure(f"create{label}", workers, Load(root, ["/fhir/Patient"], body, headers, 201), args,
                                 tmp, pid)
    if "read" in args.workloads:
        results += await measure(f"read{label}", workers, Load(root, [f"/fhir/Patient/{i}" for i in ids], None,
                                                                headers), args, tmp, pid)
    return results, sample


async def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    env = dict(os.environ, FHIR_EXCHANGE_LOG_LEVEL="warning", FHIR_EXCHANGE_RATE_LIMIT="0")
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as name:
        tmp = Path(name)
        (tmp / "bare_app.py").write_text(BARE_APP)
        for workers in args.workers:
            server, root = serve(tmp / f"open-{workers}", dict(env, FHIR_EXCHANGE_AUTH="off"), workers)
            try:
                phase, sample = await server_phases("", root, workers, args, tmp, server.pid)
                results += phase
            finally:
                stop(server)
            (tmp / "body.json").write_bytes(sample)  # the bare app serves the same bytes
            port = free_port()
            bare = subprocess.Popen([sys.executable, str(tmp / "bare_app.py"), str(port), str(workers)], cwd=tmp)
            try:
                wait_ready(f"http://127.0.0.1:{port}/fhir/metadata", bare)
                results += await measure("bare", workers, Load(f"http://127.0.0.1:{port}", ["/fhir/Patient/bare"]),
                                         args, tmp, bare.pid)
            finally:
                stop(bare)
        if args.secured:
            workers = max(args.workers)
            secured = tmp / "secured"
            port = free_port()
            base = f"http://127.0.0.1:{port}/fhir"
            secure_env = dict(env, FHIR_EXCHANGE_AUTH="on", FHIR_EXCHANGE_PUBLIC_BASE_URL=base,
                              FHIR_EXCHANGE_PORT=str(port))
            org = cli(secured, secure_env, "institution", "add", "--name", "Bench", "--hira-id", "12345678",
                      "--connection", "emr")
            jwks, pem = keygen("bench")
            (tmp / "bench.jwks.json").write_text(json.dumps(jwks))
            client = cli(secured, secure_env, "client", "add", "--institution", str(org["organization"]),
                         "--jwks", str(tmp / "bench.jwks.json"))
            proc = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port), "--data-dir",
                                     str(secured), "--workers", str(workers)], cwd=ROOT, env=secure_env)
            try:
                wait_ready(f"{base}/metadata", proc)
                token = get_token(str(client["client_id"]), pem, str(client["token_endpoint"]), "system/*.cruds",
                                  kid="bench")
                headers = {"Authorization": f"Bearer {token['access_token']}"}
                phase, _ = await server_phases(" (auth + audit)", f"http://127.0.0.1:{port}", workers, args, tmp,
                                               proc.pid, headers)
                results += phase
            finally:
                stop(proc)
    return results


def table(results: list[Result], args: argparse.Namespace) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    by = {(r.name, r.workers, r.connections): r for r in results}
    lines = [
        f"fhir-exchange REST bench: {args.seconds:g} s per phase, loopback, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, load generator {args.client} on the same cores, load average {load:.1f} at the "
        f"end; SQLite synchronous=FULL, validation on.",
        "'vs bare': the bare Starlette + orjson app serving the same Patient bytes on the same uvicorn workers "
        "and connections (aim for reads: 0.6). 'vs open': a secured phase over the same open one. 'CPU us': "
        "server CPU time per request (all its processes), 'CPU vs bare' its ratio to the bare app's (the load "
        "of a shared machine moves it far less than req/s).",
        "",
        f"{'phase':<24}{'workers':>8}{'conns':>6}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>8}{'p95 ms':>8}"
        f"{'vs bare':>8}{'vs open':>8}{'CPU us':>8}{'CPU vs bare':>12}",
    ]
    for r in results:
        bare = by.get(("bare", r.workers, r.connections))
        vs_bare = f"{r.rate / bare.rate:>8.2f}" if bare and bare.rate and r.name != "bare" else f"{'':>8}"
        open_ = by.get((r.name.replace(" (auth + audit)", ""), r.workers, r.connections)) if "(auth" in r.name else None
        vs_open = f"{r.rate / open_.rate:>8.2f}" if open_ and open_.rate else f"{'':>8}"
        cpu_bare = f"{bare.cpu_us / r.cpu_us:>12.2f}" if bare and r.cpu and bare.cpu and r.name != "bare" else ""
        lines.append(f"{r.name:<24}{r.workers:>8}{r.connections:>6}{r.ok:>9}{r.errors:>7}{r.rate:>9.0f}{r.p50:>8.2f}"
                     f"{r.p95:>8.2f}{vs_bare}{vs_open}{r.cpu_us:>8.0f}{cpu_bare}")
    low, high = min(args.workers), max(args.workers)
    if low != high:
        lines += ["", f"Scaling from {low} to {high} workers (req/s at {high} over req/s at {low}; "
                      "aim for reads: 1.8):"]
        for name in ("read", "create", "bare"):
            for connections in (1, args.concurrency):
                a, b = by.get((name, low, connections)), by.get((name, high, connections))
                if a and b and a.rate:
                    lines.append(f"  {name:<8} {connections:>3} connections: {b.rate / a.rate:5.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10, help="seconds per phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the loaded phases (default 16)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx",
                        help="load generator (default: wrk when installed)")
    parser.add_argument("--workloads", default="create,read", help="server workloads (default create,read)")
    parser.add_argument("--no-secured", dest="secured", action="store_false",
                        help="skip the phases with authentication and audit")
    args = parser.parse_args()
    args.workers = sorted({int(w) for w in str(args.workers).split(",") if w.strip()})
    args.workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    results = asyncio.run(run(args))
    print(table(results, args))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
