"""Deadlines of store reads: a search or read that runs longer than the ``search_timeout`` setting, or
whose HTTP request was abandoned, is stopped in the database, never left running in a worker.

SQLite: each reader connection has a progress handler (:meth:`ThreadSlot.check`) that SQLite calls
every :data:`CHECK_EVERY` virtual-machine instructions; it aborts the statement ("interrupted") once
the :class:`Deadline` of the read running on that thread has passed or was cancelled (the awaiting
task was cancelled: the client went away). The flag, not ``Connection.interrupt()``, because the
cancelling task does not know which pooled connection its read landed on. MongoDB: ``maxTimeMS`` on
every find, aggregate and count (the server stops the operation itself).

A deadline exceeded is :func:`exceeded`: a 503 OperationOutcome (issue code ``timeout``) with
Retry-After, since the same search may well pass when the server is less busy.
"""

from __future__ import annotations

import threading
import time

from fhir_exchange.errors import Category, FhirError

CHECK_EVERY = 4096  # SQLite VM instructions between two looks at the clock (tens of microseconds)
RETRY_AFTER = 5  # seconds a client is told to wait before trying a search that ran out of time
# A read by key cannot be made costly by its input: its deadline only guards against a stuck database,
# and is never so tight that a busy server (a tiny search deadline, costly searches) fails plain reads.
READ_FLOOR = 1.0


def for_read(search_timeout: float) -> float:
    """The deadline of a read by key (read, vread, a page of the change feed) in seconds."""
    return max(search_timeout, READ_FLOOR)


class Deadline:
    __slots__ = ("at", "cancelled", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.cancelled = False

    def passed(self) -> bool:
        return self.cancelled or time.monotonic() >= self.at

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


class ThreadSlot(threading.local):
    """The deadline of the read running on the current thread (None between reads)."""

    current: Deadline | None = None

    def check(self) -> int:
        """SQLite's progress handler: non-zero aborts the running statement."""
        d = self.current
        return 1 if d is not None and d.passed() else 0


def exceeded(seconds: float) -> FhirError:
    return FhirError(Category.TRANSIENT, f"The search ran past its deadline of {seconds:g} s and was stopped "
                     "(setting FHIR_EXCHANGE_SEARCH_TIMEOUT): narrow it or try again later", code="timeout",
                     headers={"Retry-After": str(RETRY_AFTER)})
