"""Where a REST request's time goes: the server in this process under cProfile, driven by wrk.

Runs ``create_app`` on uvicorn in this process (one worker, as ``serve`` runs each worker: h11 with the
header timeout, SQLite in a temporary folder, validation on), seeds Patients, then profiles one workload
while ``wrk`` (one thread, in another process) drives it, and prints the top entries of the profile by
own time and by cumulative time. The profiler slows everything down; the shares are what count.

    .venv/bin/python bench/profile_rest.py read            # GET /fhir/Patient/{id}, 16 connections, 5 s
    .venv/bin/python bench/profile_rest.py create --seconds 5 --top 25
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_rest import PATIENT, WRK_DONE, free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("workload", choices=["read", "create"])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    import uvicorn

    from fhir_exchange.api import protocol
    from fhir_exchange.api.app import create_app
    from fhir_exchange.settings import Settings

    with tempfile.TemporaryDirectory(prefix="profile-rest-") as name:
        tmp = Path(name)
        port = free_port()
        settings = Settings(data_dir=tmp / "data", auth=False, rate_limit=0, log_level="warning", port=port)
        app = create_app(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                http=protocol.protocol(settings.header_timeout), log_config=None)
        server = uvicorn.Server(config)
        profiler = cProfile.Profile()

        def drive() -> None:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"{root}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            body = json.dumps(PATIENT)
            with httpx.Client(base_url=root, timeout=30) as c:
                ids = [c.post("/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"})
                       .json()["id"] for _ in range(200)]
                for i in ids:  # warm
                    c.get(f"/fhir/Patient/{i}")
            if args.workload == "read":
                lua = ["local paths = {" + ",".join(json.dumps(f"/fhir/Patient/{i}") for i in ids) + "}", "local i = 0",
                       'request = function() i = i + 1; return wrk.format("GET", paths[(i % #paths) + 1]) end']
            else:
                lua = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}",
                       'wrk.headers["Content-Type"] = "application/fhir+json"',
                       'request = function() return wrk.format(nil, "/fhir/Patient") end']
            script = tmp / "w.lua"
            script.write_text("\n".join(lua) + WRK_DONE)
            on_loop(profiler.enable)
            out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds:g}s", "-s", str(script),
                                  root], capture_output=True, text=True).stdout
            on_loop(profiler.disable)
            print("wrk: requests, errors (not 2xx included), microseconds, p50 us, p95 us:",
                  out.strip().splitlines()[-1], file=sys.stderr)
            server.should_exit = True

        loop_ref: list[asyncio.AbstractEventLoop] = []

        def on_loop(fn: Callable[[], object]) -> None:
            """cProfile follows the thread it is enabled in: the event loop's (SQLite's threads are not seen)."""
            done = threading.Event()

            def run() -> None:
                fn()
                done.set()

            loop_ref[0].call_soon_threadsafe(run)
            done.wait()

        async def serve() -> None:
            loop_ref.append(asyncio.get_running_loop())
            threading.Thread(target=drive, daemon=True).start()
            await server.serve()

        asyncio.run(serve())

    for key in ("tottime", "cumulative"):
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.strip_dirs().sort_stats(key).print_stats(args.top)
        print(f"--- {args.workload}: top {args.top} by {key} ---")
        print("\n".join(line for line in stream.getvalue().splitlines() if line.strip())[:12000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
