"""What the worker processes of one ``serve --workers N`` share, outside any one process's memory.

Every worker holds its own copy of the definitions and answers from the one store, so most state is
already shared through the store (resources, the registry of clients, portal sessions, the change
feed, the notifier's lease; paging links carry their whole state in the URL). Two things changed per
request and must agree across workers without costing a store round trip on every request:

- **Definitions written to the server.** A StructureDefinition, SearchParameter, ValueSet... written
  through one worker is applied there by a commit hook; the others learn it from the change feed.
  The feed is polled every ``feed_interval`` seconds anyway (other hosts on MongoDB), but between
  workers on one machine that would leave a second in which worker B validates against yesterday's
  profile. So a commit of a conformance resource increments a *generation* counter in shared memory,
  and :class:`FreshDefinitions` compares it (8 bytes read from a memory map) before each request: a
  changed counter means the feed is read first. Every request sees the definitions committed before
  it started, whichever worker wrote them.
- **Rate limits.** The token bucket of each client (``rate_limit`` per second, a burst of twice that)
  lives in a table in the same memory map, updated under an ``flock`` of the file, so the budget is
  the client's across all workers, not per worker.

The memory map is a file in a folder the supervising ``serve`` process makes for its workers and names
in ``FHIR_EXCHANGE_SHARED_DIR`` (removed when it stops). Without that variable (one process, the
tests' in-process app) the same code runs on anonymous memory without the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import mmap
import os
import signal
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from fhir_exchange.errors import Category, FhirError

log = logging.getLogger(__name__)

SHARED_DIR_ENV = "FHIR_EXCHANGE_SHARED_DIR"
SUPERVISOR_ENV = "FHIR_EXCHANGE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
FILE_NAME = "shared.bin"

_HEADER = 64  # magic (8 bytes), the definitions generation (8), reserved
_MAGIC = b"FHXSHM01"
_SLOT = struct.Struct("<Qdd")  # client key (0: empty), tokens, monotonic time of the last update
SLOTS = 8192  # clients tracked at once; an idle client's bucket is full again and its slot reusable
_PROBE = 32  # slots looked at for one client (open addressing)
SIZE = _HEADER + SLOTS * _SLOT.size
_GEN = struct.Struct("<Q")


class SharedMemory:
    """A fixed-size memory map: a header with the definitions generation and the rate-limit table."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._fd: int | None = None
        if folder is None:
            self.map = mmap.mmap(-1, SIZE)
        else:
            self._fd = os.open(folder / FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            with self.locked():  # the first worker to get here sizes the file; the others find it sized
                if os.fstat(self._fd).st_size < SIZE:
                    os.ftruncate(self._fd, SIZE)
            self.map = mmap.mmap(self._fd, SIZE)
        if self.map[:8] != _MAGIC:
            with self.locked():
                if self.map[:8] != _MAGIC:
                    self.map[:8] = _MAGIC

    @classmethod
    def from_environment(cls) -> SharedMemory:
        folder = os.environ.get(SHARED_DIR_ENV)
        return cls(Path(folder) if folder else None)

    @property
    def shared(self) -> bool:
        """True when other processes map the same file (workers of one ``serve``)."""
        return self._fd is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._fd is None:  # one process: the event loop runs one check at a time
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def generation(self) -> int:
        value: int = _GEN.unpack_from(self.map, 8)[0]
        return value

    def bump_generation(self) -> None:
        with self.locked():
            _GEN.pack_into(self.map, 8, self.generation() + 1)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _key(client_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(client_id.encode(), digest_size=8).digest(), "little") or 1


class RateLimiter:
    """A token bucket per client in :class:`SharedMemory`: ``per_second`` requests a second, a burst of
    twice that, counted over every worker. ``time.monotonic`` is the system-wide monotonic clock on
    Linux, so the workers' instants compare."""

    def __init__(self, per_second: float, memory: SharedMemory) -> None:
        self.per_second = per_second
        self.memory = memory
        self._keys: dict[str, int] = {}

    def check(self, client_id: str) -> None:
        if self.per_second <= 0:
            return
        key = self._keys.get(client_id)
        if key is None:
            if len(self._keys) > 4 * SLOTS:
                self._keys.clear()
            key = self._keys[client_id] = _key(client_id)
        burst = 2 * self.per_second
        with self.memory.locked():
            now = time.monotonic()
            offset = self._slot(key, now, burst)
            stored, tokens, at = _SLOT.unpack_from(self.memory.map, offset)
            tokens = burst if stored != key else min(burst, tokens + (now - at) * self.per_second)
            allowed = tokens >= 1
            _SLOT.pack_into(self.memory.map, offset, key, tokens - 1 if allowed else tokens, now)
        if not allowed:
            wait = max(1, round((1 - tokens) / self.per_second + 0.5))
            raise FhirError(Category.TOO_MANY_REQUESTS, f"Rate limit of {self.per_second:g} requests per second "
                            f"exceeded for client {client_id}", code="throttled", headers={"Retry-After": str(wait)})

    def _slot(self, key: int, now: float, burst: float) -> int:
        """The client's slot, else an empty one, else one whose bucket has refilled (idle long enough:
        forgetting it changes nothing), else the least recently used of the probed ones."""
        start = key % SLOTS
        free = reusable = None
        oldest, oldest_at = 0, float("inf")
        refill = burst / self.per_second
        for i in range(_PROBE):
            offset = _HEADER + ((start + i) % SLOTS) * _SLOT.size
            stored, _, at = _SLOT.unpack_from(self.memory.map, offset)
            if stored == key:
                return offset
            if stored == 0:
                if free is None:
                    free = offset
            elif reusable is None and now - at >= refill:
                reusable = offset
            if at < oldest_at:
                oldest, oldest_at = offset, at
        if free is not None:
            return free
        return reusable if reusable is not None else oldest


class FreshDefinitions:
    """Pure ASGI middleware: before a request, if a worker committed a conformance resource since this
    worker last looked (the shared generation moved), read the change feed (``catch_up``) first."""

    def __init__(self, app: Any, memory: SharedMemory, catch_up: Callable[[], Awaitable[object]]) -> None:
        self.app = app
        self.memory = memory
        self.catch_up = catch_up
        self.seen = memory.generation()
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.memory.generation() != self.seen and scope["type"] != "lifespan":
            await self._refresh()
        await self.app(scope, receive, send)

    async def _refresh(self) -> None:
        async with self._lock:
            generation = self.memory.generation()  # read before the feed: a later bump is seen next time
            if generation != self.seen:
                try:
                    await self.catch_up()
                except Exception:  # the store hiccuped: answer anyway, the next request (or poll) retries
                    log.warning("Reading the change feed for new definitions failed", exc_info=True)
                    return
                self.seen = generation


def end_with_supervisor() -> None:
    """Linux: this worker gets SIGKILL when its supervisor dies (killed, crashed), so no orphan keeps the
    port and the database open after it. Elsewhere nothing (uvicorn stops its workers on an orderly end)."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not hasattr(os, "getppid"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(supervisor):  # it died before the call above: nobody will signal us
        os.kill(os.getpid(), signal.SIGKILL)
