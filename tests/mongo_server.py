"""A real MongoDB wire-protocol server for the tests: ``MONGODB_URL`` when set, otherwise SecantusDB.

SecantusDB (``pip install secantusdb``) is a MongoDB-compatible server that presents a single-node
replica set with transactions. The fixture starts ``python -m secantus`` on 127.0.0.1 on a free port
with its data in a temporary folder, so ``pytest`` needs no setup; the process is killed and the folder
removed at the end of the session. :class:`SecantusServer` can also be killed (SIGKILL) and restarted on
the same port and data, which the fault tests use on a server of their own.

Every test gets a database of its own (``fresh_db_url``), dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SecantusServer:
    """One SecantusDB process on 127.0.0.1; ``kill()`` / ``start()`` keep its port and data."""

    def __init__(self, data_dir: Path | None = None, *, standalone: bool = False, port: int | None = None,
                 durable: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        self._own_dir = data_dir is None
        # durable: --sync-on-commit, every acknowledged commit synced to disk. Without it SecantusDB
        # acknowledges commits it has not synced, and a kill -9 of the database loses them (issue 14):
        # the fault tests (which kill it) need it; servers never killed run without (faster).
        self.durable = durable
        self.extra_args = extra_args
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="secantus-"))
        self.port = port or free_port()
        self.standalone = standalone
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
               "--storage-path", str(self.data_dir / "db"), "--log-level", "WARNING"]
        if self.standalone:
            cmd.append("--standalone")
        if self.durable:
            cmd.append("--sync-on-commit")
        return [*cmd, *self.extra_args]

    def start(self, timeout: float = 20.0) -> None:
        cmd = self.command()
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self.proc.returncode}: "
                                   f"{(self.data_dir / 'server.log').read_text(errors='replace')[-2000:]}")
            try:
                with MongoClient(self.url, serverSelectionTimeoutMS=300, directConnection=True) as c:
                    c.admin.command("ping")
                return
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SecantusDB did not answer on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def cleanup(self) -> None:
        self.kill()  # its data is thrown away: no need to wait for a clean shutdown
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def with_db(url: str, db: str) -> str:
    """``url`` with its database path replaced by ``db`` (options kept)."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{db}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """The server every MongoDB test shares: ``MONGODB_URL``, or a SecantusDB started for the session."""
    external = os.environ.get("MONGODB_URL")
    if external:
        yield external
        return
    server = SecantusServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def fresh_db_url(mongo_url: str) -> Iterator[str]:
    """A URL naming a database of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield with_db(mongo_url, name)
    with MongoClient(mongo_url, serverSelectionTimeoutMS=3000) as c:
        c.drop_database(name)


def wipe(url: str) -> None:
    """Empty every collection of the URL's database but keep collections and indexes (cheap reuse)."""
    with MongoClient(url, serverSelectionTimeoutMS=3000) as c:
        db = c.get_default_database()
        for name in db.list_collection_names():
            if name != "schema" and db[name].find_one({}, {"_id": 1}) is not None:
                db[name].delete_many({})


@pytest.fixture(scope="module")
def module_db_url(mongo_url: str) -> Iterator[str]:
    """A database shared by one test module (dropped afterwards); pair with :func:`wiped_db_url`."""
    name = f"m_{uuid.uuid4().hex[:16]}"
    yield with_db(mongo_url, name)
    with MongoClient(mongo_url, serverSelectionTimeoutMS=3000) as c:
        c.drop_database(name)


@pytest.fixture
def wiped_db_url(module_db_url: str) -> str:
    """The module's database, emptied for this test: collections and indexes survive, documents do not."""
    wipe(module_db_url)
    return module_db_url
