"""Backup and restore of the embedded store (https://www.sqlite.org/backup.html), the audit store beside it.

**Backup** copies each database with SQLite's online backup API while the server keeps writing. The
copy runs inside one read transaction of the source connection: in WAL mode a reader sees one
snapshot and does not block the writer, and a backup step that finds the source connection already
inside a transaction uses it instead of opening its own, so the copy is that snapshot whatever is
committed meanwhile (no restart, no mixed state): every version, index row and change record up to
one commit, and nothing after it. The steps are small, so the progress bar moves and the writer's
WAL checkpoints are held back only for the copy's duration.

The backup is a folder: ``store.db`` (the resources, their history, indexes, change feed and internal
records), ``audit.db`` (the AuditEvents, when auditing has a store) and ``manifest.json`` (when, and
per file its size, SHA-256 and last change-feed seq). The two databases are copied one after the
other, the store first: the audit copy may hold events of requests after the store's snapshot.

**Restore** checks the backup (the manifest's checksums, then SQLite's ``quick_check``), takes an
exclusive lock on each target (it fails while any process, such as a running server, has the
database open: stop the server first) and copies the backup into it with the same API, so the target
is replaced in one transaction and its WAL stays consistent.

MongoDB stores are backed up with ``mongodump``/``mongorestore`` (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

STORE_FILE = "store.db"
AUDIT_FILE = "audit.db"
MANIFEST = "manifest.json"
STEP_PAGES = 1024  # pages per backup step (4 MiB at SQLite's default page size)

# (pages copied, pages in total) of the file being copied.
Progress = Callable[[int, int], None]


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    bytes: int
    sha256: str
    last_change: int  # the newest change-feed seq inside the copy (0 for the audit store)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _last_change(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM change").fetchone()[0])
    except sqlite3.OperationalError:  # not a resource store (no change table)
        return 0


def _sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:"):
        raise BackupError(f"{url.split('://')[0]} stores are backed up with their own tools (mongodump and "
                          "mongorestore for MongoDB: docs/operations.md)")
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if path in ("", ":memory:"):
        raise BackupError("an in-memory store has nothing to back up")
    return Path(path)


def copy_database(source: Path, dest: Path, progress: Progress | None = None, step: int = STEP_PAGES) -> int:
    """Copy one live SQLite database to a new file ``dest`` as one consistent snapshot; its last seq."""
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30)
    dst = sqlite3.connect(dest, isolation_level=None)
    try:
        src.execute("BEGIN")
        # The snapshot starts with the transaction's first read; every backup step then reads from it.
        last = _last_change(src)
        src.execute("SELECT count(*) FROM sqlite_schema").fetchone()

        def report(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        src.backup(dst, pages=step, progress=report)
        src.execute("COMMIT")
        return last
    finally:
        src.close()
        dst.close()


def backup(store_url: str, audit_url: str | None, dest: Path,
           progress: Callable[[str], Progress | None] | None = None, step: int = STEP_PAGES) -> list[FileEntry]:
    """Back up the store (and the audit store, when it is a file that exists) into the new folder ``dest``.
    ``progress(name)`` gives the progress callback of each file copied."""
    sources = [(STORE_FILE, _sqlite_path(store_url))]
    if audit_url:
        audit = _sqlite_path(audit_url)
        if audit.exists():
            sources.append((AUDIT_FILE, audit))
    if not sources[0][1].exists():
        raise BackupError(f"there is no store at {sources[0][1]}")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, source in sources:
        target = dest / name
        last = copy_database(source, target, progress(name) if progress else None, step)
        entries.append(FileEntry(name, target.stat().st_size, _sha256(target), last))
    manifest = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "format": 1,
                "files": [asdict(e) for e in entries]}
    (dest / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return entries


def read_manifest(folder: Path) -> list[FileEntry]:
    """The backup's files, each checked against its recorded size and checksum."""
    try:
        manifest = orjson.loads((folder / MANIFEST).read_bytes())
        entries = [FileEntry(**item) for item in manifest["files"]]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BackupError(f"{folder} is not a backup of fhir-exchange ({MANIFEST}: {exc})") from None
    for e in entries:
        path = folder / e.name
        if e.name not in (STORE_FILE, AUDIT_FILE) or not path.is_file():
            raise BackupError(f"{path} is missing")
        if path.stat().st_size != e.bytes or _sha256(path) != e.sha256:
            raise BackupError(f"{path} does not match its checksum in {MANIFEST}: the backup is damaged")
    return entries


def _check(path: Path) -> None:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        conn.close()
    if result != "ok":
        raise BackupError(f"{path} fails SQLite's quick_check: {result}")


def restore_database(source: Path, target: Path, progress: Progress | None = None, step: int = STEP_PAGES) -> None:
    """Replace the database ``target`` by the copy ``source``, unless a process has ``target`` open."""
    target.parent.mkdir(parents=True, exist_ok=True)
    dst = sqlite3.connect(target, isolation_level=None, timeout=0.5)
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        # In WAL mode an exclusive lock is granted only when no other connection has the database open,
        # and exclusive locking mode keeps it until this connection closes: no server runs meanwhile.
        dst.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            dst.execute("BEGIN EXCLUSIVE")
            dst.execute("COMMIT")
        except sqlite3.OperationalError:
            raise BackupError(f"{target} is in use (a server or another command has it open): stop it first, "
                              "then restore") from None

        def report(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        src.backup(dst, pages=step, progress=report)
    finally:
        src.close()
        dst.close()


def restore(folder: Path, store_url: str, audit_url: str | None,
            progress: Callable[[str], Progress | None] | None = None) -> list[FileEntry]:
    """Restore the backup in ``folder`` onto the store (and the audit store, when ``audit_url`` is given
    and the backup holds one). Everything is checked before anything is written."""
    entries = read_manifest(folder)
    targets = {STORE_FILE: _sqlite_path(store_url)}
    if audit_url:
        targets[AUDIT_FILE] = _sqlite_path(audit_url)
    chosen = [e for e in entries if e.name in targets]
    if not any(e.name == STORE_FILE for e in chosen):
        raise BackupError(f"{folder} holds no {STORE_FILE}")
    for e in chosen:
        _check(folder / e.name)
    for e in chosen:
        restore_database(folder / e.name, targets[e.name], progress(e.name) if progress else None)
    return chosen
