"""Where the time of concurrent creates goes: a real ``fhir-exchange serve --no-auth`` process (one
worker, SQLite, synchronous=FULL) under N concurrent ``POST /fhir/Patient`` connections from wrk, run
with or without cProfile, printing req/s, the server's CPU use (cores) and the profile's top entries.

    .venv/bin/python bench/profile_create.py                    # 16 connections, 10 s, no profiler
    .venv/bin/python bench/profile_create.py --profile --top 30 # the same under cProfile (slower)
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rest import PATIENT, WRK_DONE, cpu_seconds, free_port  # noqa: E402

# The same wrk script as bench_rest.py's create workload: POST one Patient, report through WRK_DONE.
WRK_HEAD = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/fhir+json"']


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--profile", action="store_true", help="run the server under cProfile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--warmup", type=float, default=4, help="seconds of creates before measuring (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1; profiled: 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        prof = Path(tmp) / "server.prof"
        cmd = [sys.executable, *(["-m", "cProfile", "-o", str(prof)] if args.profile else []), "-m", "fhir_exchange",
               "serve", "--no-auth", "--port", str(port), "--data-dir", str(Path(tmp) / "data"),
               "--workers", str(args.workers)]
        server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "FHIR_EXCHANGE_LOG_LEVEL": "warning"})
        root = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{root}/fhir/metadata", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        script = Path(tmp) / "create.lua"
        script.write_text("\n".join([*WRK_HEAD, f"wrk.body = {json.dumps(json.dumps(PATIENT))}"]) + WRK_DONE)
        def wrk(seconds: float) -> str:
            return subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{seconds:g}s", "--timeout", "30s",
                                   "-s", str(script), f"{root}/fhir/Patient"], capture_output=True, text=True,
                                  check=True).stdout

        wrk(args.warmup)  # start-up costs (definitions, compiled extraction plans) out of the figures
        before = cpu_seconds(server.pid)
        out = wrk(args.seconds)
        cores = (cpu_seconds(server.pid) - before) / args.seconds
        server.send_signal(signal.SIGINT)
        server.wait(60)
        found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", out)
        assert found is not None, out
        n, errors, micros, p50, p95 = (int(g) for g in found.groups())
        print(f"creates: {args.connections} connections, {n / (micros / 1e6):.0f} req/s, errors {errors}, "
              f"p50 {p50 / 1000:.1f} ms, p95 {p95 / 1000:.1f} ms, server CPU {cores:.2f} cores"
              + (" (under cProfile)" if args.profile else ""))
        if args.profile and prof.exists():
            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(args.top)
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
