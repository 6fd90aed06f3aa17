"""Big bodies against a real ``fhir-exchange serve`` process (issue 14): how long ``GET /metadata`` takes
while N clients post multi-MiB Patients, as a ratio to the same server idle, and the server's memory.

Each big Patient holds many identifiers (``--mib`` MiB of JSON): costly to parse and to validate,
unlike one long string. Parsing runs in a worker thread above ``FHIR_EXCHANGE_OFFLOAD_BYTES`` (api/
limits.py); validation still runs on the event loop (see the README's "Big bodies").

    .venv/bin/python bench/bench_bigbody.py                      # 4 clients, 8 MiB each, 15 s
    .venv/bin/python bench/bench_bigbody.py --clients 1 --mib 31 --seconds 20
    .venv/bin/python bench/bench_bigbody.py --offload 1000000000  # parsing on the loop, for comparison
    .venv/bin/python bench/bench_bigbody.py --clients 1 --bundle 10000   # 10,000-entry transactions

Prints one table: /metadata p50/p95/max idle and under load, their ratio, big posts done and their
statuses, the server's RSS before and after, and its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def big_patient(mib: float) -> bytes:
    n = int(mib * 1024 * 1024 / 62)
    ids = [{"system": "urn:oid:1.2.410.100.1", "value": f"MRN-{i:09d}"} for i in range(n)]
    return orjson.dumps({"resourceType": "Patient", "gender": "female", "name": [{"family": "Big"}],
                         "identifier": ids})


def big_transaction(entries: int) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
         "resource": {"resourceType": "Patient", "gender": "female", "name": [{"family": f"T{i}"}],
                      "identifier": [{"system": "urn:oid:1.2.410.100.1", "value": f"T-{i:09d}"}]},
         "request": {"method": "POST", "url": "Patient"}} for i in range(entries)]})


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def latencies(base: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < end and not (stop and stop.is_set()):
            t0 = time.perf_counter()
            r = client.get(f"{base}/metadata", params={"_summary": "true"})
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200
            time.sleep(0.05)
    return out


def pcts(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    return (statistics.median(xs) * 1000, xs[max(0, int(len(xs) * 0.95) - 1)] * 1000, xs[-1] * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4, help="clients posting big bodies at once (default 4)")
    ap.add_argument("--mib", type=float, default=8.0, help="size of each big Patient in MiB (default 8)")
    ap.add_argument("--seconds", type=float, default=15.0, help="how long the load runs (default 15)")
    ap.add_argument("--offload", type=int, default=None, help="FHIR_EXCHANGE_OFFLOAD_BYTES for the server")
    ap.add_argument("--bundle", type=int, default=0, help="post transaction Bundles of this many Patient "
                    "creates instead of big Patients")
    args = ap.parse_args()

    body = big_transaction(args.bundle) if args.bundle else big_patient(args.mib)
    url = "" if args.bundle else "/Patient"
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FHIR_EXCHANGE_AUTH": "off", "FHIR_EXCHANGE_LOG_LEVEL": "warning",
               "FHIR_EXCHANGE_CACHE_DIR": str(ROOT / ".pytest_cache" / "fhir-packages"),
               "FHIR_EXCHANGE_RATE_LIMIT": "0"}
        if args.offload is not None:
            env["FHIR_EXCHANGE_OFFLOAD_BYTES"] = str(args.offload)
        env.pop("FHIR_EXCHANGE_STORE_URL", None)
        proc = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port),
                                 "--data-dir", tmp], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            idle = latencies(base, 5)
            rss_before, _ = rss_kib(proc.pid)
            stop = threading.Event()
            statuses: list[int] = []
            lock = threading.Lock()

            def poster() -> None:
                with httpx.Client(timeout=300) as client:
                    while not stop.is_set():
                        r = client.post(f"{base}{url}", content=body,
                                        headers={"Content-Type": "application/fhir+json",
                                                 "Prefer": "return=minimal"})
                        with lock:
                            statuses.append(r.status_code)

            threads = [threading.Thread(target=poster, daemon=True) for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(1.0)  # the first bodies are on the wire
            loaded = latencies(base, args.seconds)
            stop.set()
            for t in threads:
                t.join(300)
            rss_after, peak = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)

    i50, i95, imax = pcts(idle)
    l50, l95, lmax = pcts(loaded)
    what = f"{args.bundle}-entry transaction Bundles" if args.bundle else "Patients"
    print(f"\nBig bodies: {args.clients} clients posting {len(body) / 2**20:.1f} MiB {what} for "
          f"{args.seconds:.0f} s; offload threshold {args.offload if args.offload is not None else 'default'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'':<28}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    print(f"{'/metadata idle':<28}{i50:>10.1f}{i95:>10.1f}{imax:>10.1f}")
    print(f"{'/metadata under big posts':<28}{l50:>10.1f}{l95:>10.1f}{lmax:>10.1f}")
    print(f"{'ratio':<28}{l50 / i50:>10.1f}{l95 / i95:>10.1f}{lmax / imax:>10.1f}")
    codes = {c: statuses.count(c) for c in sorted(set(statuses))}
    print(f"big posts answered: {len(statuses)} {codes}")
    print(f"server RSS: {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after, "
          f"peak {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
