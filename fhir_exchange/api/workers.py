"""The process model of ``serve --workers N`` (issue 19): one supervising process, N uvicorn workers.

The supervisor (``cli.serve``) checks the settings and brings the store's schema up to date once
(:func:`prepare_store`: N processes starting at once on one new SQLite file must not each migrate it),
makes the folder the workers share (:mod:`fhir_exchange.api.shared`, and prometheus-client's
multiprocess folder unless the operator named one), writes the command line's options into
``FHIR_EXCHANGE_*`` so that every worker reads the same settings, and lets uvicorn start the workers
(``fhir_exchange.api.app:app_from_environment``) on its one listening socket; the kernel spreads
connections over them. Each worker runs the whole application with its own lifespan: its definitions,
its reader threads and writer connection on the one store (SQLite serialises writers across processes
with its file lock), its change-feed follower; the notifier delivers from whichever worker holds the
store's lease. A worker that dies is restarted by uvicorn; a supervisor killed outright takes its
workers with it (:func:`fhir_exchange.api.shared.end_with_supervisor`), as a single process would die.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhir_exchange.api.shared import SHARED_DIR_ENV, SUPERVISOR_ENV
from fhir_exchange.metrics import MULTIPROCESS_ENV
from fhir_exchange.settings import ENV_PREFIX, Settings


def worker_count(settings: Settings) -> int:
    """``workers``, or one per core when 0."""
    if settings.workers < 0:
        raise ValueError(f"workers must be 0 (one per core) or more, not {settings.workers}")
    return settings.workers or os.cpu_count() or 1


def environment(settings: Settings) -> dict[str, str]:
    """The ``FHIR_EXCHANGE_*`` values of the command line's options, so the workers build equal settings."""
    values = {
        "host": settings.host, "port": str(settings.port), "data_dir": str(Path(settings.data_dir).resolve()),
        "store_url": settings.store_url, "auth": "on" if settings.auth else "off", "certfile": settings.certfile,
        "keyfile": settings.keyfile, "client_ca": settings.client_ca, "workers": str(settings.workers),
    }
    return {ENV_PREFIX + name.upper(): value for name, value in values.items()}


def prepare_store(app: Any) -> None:
    """Open and close the application's store and audit store once, in the supervisor: the schema is
    created or migrated here, before any worker opens the file (each then finds it current)."""
    svc = app.state.services

    async def go() -> None:
        await svc.open()
        await svc.close()

    asyncio.run(go())


_PREFIX = "fhir-exchange-workers-"


def _remove_orphans() -> None:
    """Folders left by supervisors that were killed outright (SIGKILL runs no clean-up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = folder.name.removeprefix(_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists() or not Path("/proc/self").exists():
            continue  # its supervisor runs (or this system has no /proc to tell)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def shared_folders() -> Iterator[Path]:
    """The folder of :mod:`~fhir_exchange.api.shared` (and of the metrics when the operator named none),
    in this process's environment while the workers run, removed afterwards."""
    _remove_orphans()
    folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    saved = {name: os.environ.get(name) for name in (SHARED_DIR_ENV, MULTIPROCESS_ENV, SUPERVISOR_ENV)}
    os.environ[SHARED_DIR_ENV] = str(folder)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    if not os.environ.get(MULTIPROCESS_ENV):  # /metrics of any worker answers for all of them
        (folder / "metrics").mkdir()
        os.environ[MULTIPROCESS_ENV] = str(folder / "metrics")
    try:
        yield folder
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)
