"""Backup while a real server process writes, restore, and every version compared; the store APIs directly."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_exchange.store.backup import BackupError, backup, read_manifest, restore
from tests.ops.conftest import cli, serve

Rows = dict[tuple[str, str, int], tuple[Any, ...]]


def history(db: Path) -> Rows:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {(t, i, v): rest for t, i, v, *rest in conn.execute(
            "SELECT type, id, version, last_updated, deleted, method, owner, body FROM history")}
    finally:
        conn.close()


def current(db: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {(t, i): rest for t, i, *rest in conn.execute(
            "SELECT type, id, version, last_updated, deleted, body FROM resource")}
    finally:
        conn.close()


def changes(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT seq, type, id, version, deleted FROM change ORDER BY seq"))
    finally:
        conn.close()


class Writer(threading.Thread):
    """Creates and updates Patients over HTTP until stopped (the write load of the backup)."""

    def __init__(self, base: str, name: str) -> None:
        super().__init__(daemon=True)
        self.base, self.tag = base, name
        self.stop = threading.Event()
        self.written = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                rid = f"{self.tag}-{n % 40}"  # 40 resources, each updated again and again: long histories
                resp = c.put(f"/Patient/{rid}", json={"resourceType": "Patient", "id": rid, "gender": "other",
                                                      "name": [{"family": f"Load{n}"}]})
                if resp.status_code not in (200, 201):
                    self.errors.append(f"{resp.status_code} {resp.text[:200]}")
                    return
                self.written += 1
                if n % 7 == 0:
                    c.delete(f"/Patient/{self.tag}-{(n * 3) % 40}")


def wait_for_writes(writers: list[Writer], n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(w.written for w in writers) < n:
        assert time.monotonic() < deadline, "the writers are too slow"
        assert not any(w.errors for w in writers), [w.errors for w in writers]
        time.sleep(0.05)


def test_backup_under_write_load_restores_every_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(data)
    writers = [Writer(f"{server.root}/fhir", f"w{i}") for i in range(3)]
    try:
        for w in writers:
            w.start()
        wait_for_writes(writers, 150)
        # Small steps (1 page each): the copy spans many writer commits, which must not show in it.
        made = cli("backup", str(tmp_path / "bak"), "--data-dir", str(data), "--pages-per-step", "1")
        assert made.returncode == 0, made.stderr.decode()
        during = sum(w.written for w in writers)
        wait_for_writes(writers, during + 100)  # writes go on after the snapshot
    finally:
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(30)
        server.stop()
    assert not any(w.errors for w in writers), [w.errors for w in writers]
    assert made.stderr.endswith(b"\n") and b"store.db" in made.stderr  # the progress bar, closed
    assert b"Backed up to" in made.stdout

    restored = tmp_path / "restored"
    back = cli("restore", str(tmp_path / "bak"), "--data-dir", str(restored))
    assert back.returncode == 0, back.stderr.decode()
    assert back.stderr.endswith(b"\n")

    original, copy = history(data / "fhir.db"), history(restored / "fhir.db")
    assert 150 <= len(copy) < len(original)  # a snapshot taken in the middle of the load
    # Every version in the copy is the original's, byte for byte; each resource's versions are 1..n
    # (no version of a commit missing while a later one is there: one snapshot, not a mix).
    for key, row in copy.items():
        assert original[key] == row, key
    versions: dict[tuple[str, str], list[int]] = {}
    for t, i, v in copy:
        versions.setdefault((t, i), []).append(v)
    cur = current(restored / "fhir.db")
    assert set(cur) == set(versions)
    for key, vs in versions.items():
        assert sorted(vs) == list(range(1, len(vs) + 1)), key
        latest = copy[(*key, len(vs))]
        assert cur[key][0] == len(vs) and cur[key][1] == latest[0] and bool(cur[key][2]) == bool(latest[1])
        assert cur[key][3] == latest[4]
    # The change feed in the copy is the versions in the copy, in order, with no gap.
    feed = changes(restored / "fhir.db")
    assert [c[0] for c in feed] == list(range(1, len(feed) + 1))
    assert {(t, i, v) for _, t, i, v, _ in feed} == set(copy)
    manifest = orjson.loads((tmp_path / "bak" / "manifest.json").read_bytes())
    assert manifest["files"][0]["last_change"] == len(feed)

    # The restored store serves: every resource's history over HTTP is the copy's.
    again = serve(restored)
    try:
        with httpx.Client(base_url=f"{again.root}/fhir", timeout=30) as c:
            for (t, i), vs in versions.items():
                bundle = c.get(f"/{t}/{i}/_history", params={"_count": "1000"}).json()
                got = {int(e["response"]["etag"].split('"')[1]): e.get("resource") for e in bundle["entry"]}
                assert sorted(got) == sorted(vs), (t, i)
                for v, resource in got.items():
                    stored = copy[(t, i, v)]
                    assert resource == (None if stored[1] else orjson.loads(stored[4])), (t, i, v)
    finally:
        again.stop()


async def test_backup_and_restore_with_the_audit_store(tmp_path: Path) -> None:
    from fhir_exchange.fhir import jsonio
    from fhir_exchange.store.port import NEW, ResourceVersion
    from fhir_exchange.store.sqlite import SqliteStore

    store_db, audit_db = tmp_path / "live" / "fhir.db", tmp_path / "live" / "fhir-audit.db"
    for path, type in ((store_db, "Patient"), (audit_db, "AuditEvent")):
        s = SqliteStore(path)
        await s.open()
        for n in range(3):
            doc = {"resourceType": type, "id": f"x{n}"}
            async with s.transaction() as uow:
                await uow.put(ResourceVersion(type, f"x{n}", 1, "2026-01-01T00:00:00Z", False, jsonio.dumps(doc),
                                              "PUT", None), doc, expected_version=NEW)
        await s.close()
    seen: list[tuple[str, int, int]] = []

    def progress(name: str) -> Any:
        return lambda done, total: seen.append((name, done, total))

    entries = backup(f"sqlite:///{store_db}", f"sqlite:///{audit_db}", tmp_path / "bak", progress)
    assert [e.name for e in entries] == ["store.db", "audit.db"] and entries[0].last_change == 3
    assert {name for name, _, _ in seen} == {"store.db", "audit.db"}
    assert all(done == total for name, done, total in seen[-1:])
    with pytest.raises(BackupError, match="not empty"):
        backup(f"sqlite:///{store_db}", None, tmp_path / "bak")

    target, target_audit = tmp_path / "new" / "fhir.db", tmp_path / "new" / "fhir-audit.db"
    restore(tmp_path / "bak", f"sqlite:///{target}", f"sqlite:///{target_audit}")
    assert history(target) == history(store_db)
    assert history(target_audit) == history(audit_db)

    # While a process (here: another connection) has the target open, restore refuses and writes nothing.
    holder = sqlite3.connect(target)
    holder.execute("SELECT count(*) FROM resource").fetchone()
    try:
        with pytest.raises(BackupError, match="in use"):
            restore(tmp_path / "bak", f"sqlite:///{target}", None)
    finally:
        holder.close()

    # A damaged backup is refused before anything is written.
    with (tmp_path / "bak" / "store.db").open("r+b") as f:
        f.seek(5000)
        f.write(b"\x00garbage\x00")
    with pytest.raises(BackupError, match="checksum"):
        read_manifest(tmp_path / "bak")
    with pytest.raises(BackupError, match="mongodump"):
        backup("mongodb://127.0.0.1/fhir", None, tmp_path / "bak2")
