"""``fhir-exchange serve``: the FHIR API under uvicorn, one process or several workers on one store."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from fhir_exchange.cli.options import settings_from_args
from fhir_exchange.logs import configure as configure_logging
from fhir_exchange.settings import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fhir_exchange.api import protocol, workers
    from fhir_exchange.api.app import create_app

    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)  # JSON lines with request ids (logs.py)
    problem = _preflight(settings)
    if problem:  # one line and status 1, not a traceback from the middle of start-up
        print(f"fhir-exchange: cannot start: {problem}", file=sys.stderr)
        return 1
    try:
        count = workers.worker_count(settings)
        app = create_app(settings)
    except ValueError as exc:  # a setting only the store can judge (sqlite_synchronous)
        print(f"fhir-exchange: invalid setting: {exc}", file=sys.stderr)
        return 2
    # uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes in-flight requests, runs lifespan shutdown.
    # After that graceful shutdown uvicorn (>= 0.29) re-raises the captured signal to the handler that was
    # installed before it started; with Python's defaults the process would then die of SIGTERM (status
    # -15/143) or raise KeyboardInterrupt. Stopping is the normal end of a service, so these handlers make
    # the re-raise a no-op and ``serve`` exits 0.
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    tls: dict[str, Any] = {}
    if settings.certfile:
        tls = {"ssl_certfile": settings.certfile, "ssl_keyfile": settings.keyfile or None}
        if settings.client_ca:
            # A client certificate is asked for and verified; those without one still use tokens. The
            # protocol (api/protocol.py) hands its subject to the application (api/tls.py).
            tls.update(ssl_ca_certs=settings.client_ca, ssl_cert_reqs=ssl.CERT_OPTIONAL)
    elif settings.client_ca:
        print("fhir-exchange: --client-ca needs --certfile (TLS served by this process)", file=sys.stderr)
        return 2
    try:
        # log_config=None: uvicorn keeps the logging configured above; access_log=False: its access lines
        # carry the query string, ours (api/telemetry.py) do not.
        # Slow and greedy clients (issue 14): a request head within header_timeout (api/protocol.py), at
        # most max_connections open (503 beyond), idle keep-alive closed after keep_alive_timeout; a head
        # larger than 64 KiB is a 400 (long search URLs fit). Their log lines are throttled.
        protocol.quiet_uvicorn()
        options: dict[str, Any] = dict(
            host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=10,
            log_config=None, access_log=False, limit_concurrency=settings.max_connections, backlog=settings.backlog,
            timeout_keep_alive=max(1, round(settings.keep_alive_timeout)), h11_max_incomplete_event_size=64 * 1024,
            **tls)
        if count == 1:
            uvicorn.run(app, http=protocol.protocol(settings.header_timeout), **options)
        else:
            # Several workers (api/workers.py): the schema once here, settings through the environment,
            # uvicorn's supervisor starting each worker's app from the factory. max_connections is per worker.
            workers.prepare_store(app)
            del app
            os.environ.update(workers.environment(settings))
            with workers.shared_folders():
                uvicorn.run("fhir_exchange.api.app:app_from_environment", factory=True, workers=count,
                            http="fhir_exchange.api.protocol:HardenedH11Protocol", **options)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    return None


def _preflight(settings: Settings) -> str | None:
    """What would stop the embedded store at start-up (an unwritable data directory, a full disk), said
    in one line before anything starts. MongoDB is not checked: the server starts without it (503s)."""
    url = settings.resolved_store_url
    if not url.startswith("sqlite:"):
        return None
    path = Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
    if str(path) in ("", ":memory:", "."):
        return None
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fhir-exchange-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:  # room for a few pages of the database and its WAL
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as exc:
        return f"the data directory {folder} is not usable: {exc.strerror or exc} ({type(exc).__name__})"
    return None
