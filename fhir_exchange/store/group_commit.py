"""Group commit for the SQLite store: units of work that arrive together share one COMMIT.

A commit in WAL mode with ``synchronous=FULL`` is one fsync of the WAL, which costs milliseconds, far
more than the SQL of a create; with one commit per unit of work, 16 clients wrote no faster than one.
Units of work are still serialised (one at a time on the writer connection, so a conditional create or
a version check sees every earlier unit, committed or not), but the COMMIT is put off while other units
wait for the writer: they run inside the same SQLite transaction, each in its own ``SAVEPOINT``, and one
COMMIT (one fsync) makes them all durable. A unit that fails rolls back to its savepoint and fails
alone; each caller is answered only once the COMMIT holding its writes has returned (or with its error:
a failed COMMIT fails every unit of the group, and nothing of the group was written).

A unit that never needed the writer connection before its end (a plain create: its writes were only
buffered) is *deferred*: its writes run, in its savepoint, in the next hop to the writer thread (the
next unit's first read, or the COMMIT), which saves a hop per unit. Errors of its writes (a version
precondition) are its own, as before; they are reported when the group settles.

Threads: :class:`Group` fields marked "writer" change only on the writer thread, in the hops the event
loop awaits in order (units are serialised), the others only on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_exchange.errors import Category, FhirError

BUSY_SECONDS = 30  # how long BEGIN waits for another process's write transaction (as busy_timeout did)
MAX_MEMBERS = 64  # a group commits once it holds this many units, even if more are waiting (bounds latency)


def lost_error() -> FhirError:
    return FhirError(Category.TRANSIENT, "The store's transaction was rolled back under this write (storage "
                     "failing); nothing was written. Retry later.", code="transient", headers={"Retry-After": "1"})


@dataclass(eq=False)
class Member:
    """One unit of work of a group, waiting for the group's COMMIT."""

    writes: list[Callable[[], None]]  # a deferred unit's buffered writes, not yet run
    done: asyncio.Future[BaseException | None]
    error: BaseException | None = None  # writer: its own writes failed (rolled back to its savepoint)
    withdrawn: bool = False  # its caller was cancelled before its writes ran: they never will


@dataclass(eq=False)
class Group:
    """Units of work sharing one SQLite transaction on the writer connection ``conn``."""

    conn: sqlite3.Connection
    translate: Callable[[sqlite3.Error], FhirError]
    members: list[Member] = field(default_factory=list)
    deferred: list[Member] = field(default_factory=list)  # members whose writes have not run yet
    begun: bool = False  # writer: BEGIN IMMEDIATE ran
    savepoint: bool = False  # writer: a unit's savepoint is open
    lost: FhirError | None = None  # writer: the transaction was rolled back under the group

    # -- event loop ---------------------------------------------------------------------------------

    def join(self, writes: list[Callable[[], None]]) -> Member:
        member = Member(writes, asyncio.get_running_loop().create_future())
        self.members.append(member)
        if writes:
            self.deferred.append(member)
        return member

    def take_deferred(self) -> list[Member]:
        batch, self.deferred = self.deferred, []
        return batch

    def settle(self, commit_error: BaseException | None) -> None:
        """Answer every member: its own error, else the group's (lost transaction, failed COMMIT), else
        None (durable)."""
        for m in self.members:
            if m.done.done():
                continue
            err = m.error or self.lost or commit_error
            # One exception object per waiter: each raises it in its own task.
            m.done.set_result(dataclasses.replace(err) if isinstance(err, FhirError) and err is not m.error else err)

    # -- writer thread ------------------------------------------------------------------------------

    def begin(self) -> None:
        if self.lost is not None:
            raise dataclasses.replace(self.lost)
        if not self.begun:
            if self.conn.in_transaction:  # left by a hop whose task was cancelled before it could roll back
                self.conn.execute("ROLLBACK")
            self._begin_immediate()
            self.begun = True
        elif not self.conn.in_transaction:  # SQLite rolled the whole transaction back (disk full, I/O error)
            self.lost = lost_error()
            raise dataclasses.replace(self.lost)

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write transaction in short steps: SQLite's own
        busy handler sleeps 1, 2, 5 ... 100 ms between tries, so with several worker processes on one
        file most of the time went to sleeping past the moment the lock was free (a group's transaction
        lasts about a millisecond)."""
        self.conn.execute("PRAGMA busy_timeout=0")
        try:
            deadline = time.monotonic() + BUSY_SECONDS
            while True:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.0002)
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")

    def open_unit(self) -> None:
        self.conn.execute("SAVEPOINT unit")
        self.savepoint = True

    def release_unit(self) -> None:
        self.conn.execute("RELEASE unit")
        self.savepoint = False

    def abort_unit(self) -> None:
        """Roll the current unit back to its savepoint; the earlier units of the group stay."""
        if not self.conn.in_transaction:
            self.savepoint = False
            if self.begun and self.lost is None:
                self.lost = lost_error()
            return
        if self.savepoint:
            self.conn.execute("ROLLBACK TO unit")
            self.conn.execute("RELEASE unit")
            self.savepoint = False

    def run_deferred(self, batch: list[Member]) -> None:
        """Run deferred units' writes, each in its own savepoint; a failing one is rolled back alone."""
        pending = [m for m in batch if not m.withdrawn]
        if not pending:
            return
        try:
            self.begin()
        except (FhirError, sqlite3.Error) as exc:
            for m in pending:
                m.error = self._error(exc)
            raise
        for i, m in enumerate(pending):
            if m.withdrawn:  # cancelled while BEGIN waited for the file lock
                continue
            self.open_unit()
            try:
                for write in m.writes:
                    write()
                self.release_unit()
            except Exception as exc:  # the unit's failure is its own, whatever it is
                m.error = self._error(exc)
                self.abort_unit()
                if self.lost is not None:  # the transaction is gone: the rest cannot run in it
                    for rest in pending[i + 1:]:
                        rest.error = dataclasses.replace(self.lost)
                    return
            finally:
                m.writes = []

    def commit(self, batch: list[Member]) -> None:
        """The group's last hop: the deferred writes, then one COMMIT."""
        try:
            self.run_deferred(batch)
        except (FhirError, sqlite3.Error):
            return  # each deferred member holds its error
        if not self.begun or self.lost is not None:
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _error(self, exc: BaseException) -> BaseException:
        return self.translate(exc) if isinstance(exc, sqlite3.Error) else exc
