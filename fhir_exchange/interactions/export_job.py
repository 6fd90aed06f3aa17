"""The bulk export job: https://hl7.org/fhir/uv/bulkdata/STU2/export.html (the server side of the
asynchronous request pattern, and the NDJSON files it produces).

A job's state is a store :class:`~fhir_exchange.store.port.Record` (kind ``bulk-export``), so every
worker process on the store answers its status, downloads and cancellation; its files live in
``<export_dir>/<job id>/<Type>-<n>.ndjson``. The job runs as an asyncio task in the process that took
the kick-off, as the kick-off's actor, reading page by page through the normal
:meth:`Repository.search` (visibility, grants and the token's scopes apply exactly as to a search),
and appends each page to its file at once: memory holds one page, never a type. The task renews a
heartbeat in the record; a job whose heartbeat is older than ``export_stall_seconds`` (its process
died) is reported as failed. ``DELETE`` writes a cancel marker record that the task reads every page.

Pages are keyset-paged on ``_lastUpdated`` (ties broken by the store's stable order) and bounded by
the job's ``transactionTime``: a resource written during the export has a later ``lastUpdated`` and
is left to the next ``_since`` export, and a write during the export never shifts a page (offset
paging would skip the resource after one that was updated or deleted).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.services import Services
from fhir_exchange.search import registry
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import AnyOf, Chain, Criterion, Has, IdIn, SearchQuery
from fhir_exchange.security.actor import Actor
from fhir_exchange.settings import Settings
from fhir_exchange.store.port import Record, ResourceVersion

log = logging.getLogger("fhir_exchange.export")

KIND = "bulk-export"
CANCELLED = "bulk-export-cancel"
MAX_PER_FILE = 100_000  # resources per NDJSON file; a type beyond gets <Type>-2.ndjson, ...
PAGE = 1000  # resources per search page: what the job holds in memory at once
ID_CHUNK = 100  # _id values of one de-duplication query (within search_max_values by default)
OUTCOMES = "OperationOutcome-1.ndjson"  # the manifest's error file (warnings about the request)
HEARTBEAT_SECONDS = 1.0  # at most one record write per this many seconds while pages stream
# A criterion no logical id meets ([A-Za-z0-9-.]{1,64}): `_id:not` of it is every resource.
_NO_ID = "!"


@dataclass(slots=True)
class Job:
    """One export, as kept in its record (JSON)."""

    id: str
    request: str  # the kick-off URL
    base_url: str  # the FHIR base the file URLs hang off
    level: str  # system | patient | group
    types: list[str]
    transaction_time: str
    institution: str | None  # who may poll, download and cancel (None: the system actor)
    client_id: str | None
    requires_token: bool
    expires: str
    group: str | None = None
    since: str | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)  # type -> _typeFilter query strings
    status: str = "in-progress"  # in-progress | completed | failed
    heartbeat: str = ""
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)  # {type, file, count}
    warnings: list[str] = field(default_factory=list)  # issues of the manifest's error file
    error: str | None = None
    error_status: int = 500

    def to_record(self) -> Record:
        return Record(KIND, self.id, jsonio.dumps(asdict(self)), self.expires)

    @classmethod
    def from_record(cls, record: Record) -> Job:
        return cls(**jsonio.loads(record.value))

    def manifest(self) -> dict[str, Any]:
        """The completion manifest (export.html#response---complete-status)."""
        out = [{"type": o["type"], "url": f"{self.base_url}/bulk-files/{self.id}/{o['file']}", "count": o["count"]}
               for o in self.output]
        errors = ([{"type": "OperationOutcome", "url": f"{self.base_url}/bulk-files/{self.id}/{OUTCOMES}"}]
                  if self.warnings else [])
        return {"transactionTime": self.transaction_time, "request": self.request,
                "requiresAccessToken": self.requires_token, "output": out, "error": errors}

    def allows(self, actor: Actor) -> bool:
        """Only the kick-off's institution (or the system actor for its own jobs) sees the job at all."""
        if actor.system:  # authentication off: every caller is the system
            return True
        return actor.institution is not None and actor.institution == self.institution

    def files(self) -> set[str]:
        return {o["file"] for o in self.output} | ({OUTCOMES} if self.warnings else set())


def export_dir(settings: Settings) -> Path:
    """Where job folders live: ``export_dir``, else ``<data_dir>/exports`` (a MongoDB deployment with
    several hosts points every process at one shared folder)."""
    return Path(settings.export_dir) if settings.export_dir else Path(settings.data_dir) / "exports"


class NdjsonWriter:
    """Appends resources of one type to ``<Type>-<n>.ndjson`` files, flushed after every page, so
    what the job holds in memory is one page and what a reader of the file sees is whole lines."""

    def __init__(self, folder: Path, type: str, max_per_file: int = MAX_PER_FILE) -> None:
        self.folder = folder
        self.type = type
        self.max_per_file = max_per_file
        self.files: list[tuple[str, int]] = []  # (file name, resources) in order
        self._out: IO[bytes] | None = None

    def write_page(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            if self._out is None or self.files[-1][1] >= self.max_per_file:
                self._open_next()
            assert self._out is not None
            self._out.write(body)
            self._out.write(b"\n")
            name, n = self.files[-1]
            self.files[-1] = (name, n + 1)
        if self._out is not None:
            self._out.flush()

    def _open_next(self) -> None:
        self.close()
        name = f"{self.type}-{len(self.files) + 1}.ndjson"
        self._out = (self.folder / name).open("wb")
        self.files.append((name, 0))

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


class Cancelled(Exception):
    """The job's cancel marker was found between two pages."""


class Exports:
    """The jobs of this process: starts their tasks, reads and writes job records, removes expired
    jobs' files. Any process answers for any job from the records; only the starting one runs it."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, Job] = {}  # the job objects the tasks update
        self.page = PAGE

    @property
    def folder(self) -> Path:
        return export_dir(self.svc.settings)

    def now(self) -> str:
        return instant(self.svc.clock.now())

    async def load(self, job_id: str) -> Job | None:
        """The job, or None when unknown, expired or cancelled."""
        store = self.svc.store
        now = self.now()
        if await store.get_record(CANCELLED, job_id, now=now) is not None:
            return None
        record = await store.get_record(KIND, job_id, now=now)
        return Job.from_record(record) if record is not None else None

    async def save(self, job: Job) -> None:
        await self.svc.store.put_record(job.to_record())

    def stalled(self, job: Job) -> bool:
        """Whether an in-progress job's process has stopped renewing its heartbeat."""
        if job.status != "in-progress" or not job.heartbeat:
            return False
        age = self.svc.clock.now().timestamp() - _seconds(job.heartbeat)
        return age > self.svc.settings.export_stall_seconds

    async def start(self, job: Job, actor: Actor) -> None:
        job.heartbeat = self.now()
        await self.save(job)  # the record first: a cleanup elsewhere never sees the folder without it
        (self.folder / job.id).mkdir(parents=True, exist_ok=True)
        task = asyncio.create_task(self._run(job, actor))
        self.tasks[job.id], self._running[job.id] = task, job

        def done(_: asyncio.Task[None]) -> None:
            self.tasks.pop(job.id, None)
            self._running.pop(job.id, None)

        task.add_done_callback(done)

    async def cancel(self, job: Job) -> None:
        """Cancel (or forget a finished job): the marker stops the task wherever it runs; files go now."""
        await self.svc.store.put_record(Record(CANCELLED, job.id, b"{}", job.expires))
        await self.svc.store.delete_record(KIND, job.id)
        task = self.tasks.get(job.id)
        if task is not None:
            task.cancel()
        shutil.rmtree(self.folder / job.id, ignore_errors=True)

    async def stop(self) -> None:
        """At shutdown: running jobs are marked failed (their heartbeat would say so later anyway). Here
        rather than in the task, which may be cancelled before it ever ran."""
        running = [(self._running[key], task) for key, task in self.tasks.items() if key in self._running]
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        for job, task in running:
            if task.cancelled() and await self.svc.store.get_record(CANCELLED, job.id, now=self.now()) is None:
                job.status, job.error = "failed", "The server stopped while the export ran: start it again"
                job.heartbeat = self.now()
                await self.save(job)

    async def cleanup(self) -> int:
        """Remove the folders of jobs whose record expired or was cancelled; purge expired records."""
        now = self.now()
        store = self.svc.store
        live = {r.key for r in await store.list_records(KIND, now=now)}
        settled = self.svc.clock.now().timestamp() - 60  # a folder younger may belong to a record just written
        removed = 0
        if self.folder.is_dir():
            for child in self.folder.iterdir():
                if child.is_dir() and child.name not in live and child.name not in self.tasks \
                        and child.stat().st_mtime < settled:
                    shutil.rmtree(child, ignore_errors=True)
                    removed += 1
        await store.purge_records(now)
        return removed

    async def sweep_forever(self) -> None:
        interval = min(3600.0, max(1.0, self.svc.settings.export_retention / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.cleanup()
            except Exception:  # the next sweep retries
                log.exception("Removing expired bulk exports failed")

    # -- the job ---------------------------------------------------------------------------------

    async def _run(self, job: Job, actor: Actor) -> None:
        folder = self.folder / job.id
        try:
            await self._export(job, actor, folder)
            job.status, job.progress = "completed", "completed"
            if job.warnings:
                with (folder / OUTCOMES).open("wb") as out:
                    for text in job.warnings:
                        out.write(jsonio.dumps({"resourceType": "OperationOutcome", "issue": [
                            {"severity": "warning", "code": "informational", "diagnostics": text}]}) + b"\n")
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            return
        except FhirError as err:
            job.status, job.error, job.error_status = "failed", err.diagnostics, err.status
        except Exception:
            log.exception("Bulk export %s failed", job.id)
            job.status, job.error = "failed", "Internal server error while exporting"
        job.heartbeat = self.now()
        if await self.svc.store.get_record(CANCELLED, job.id, now=self.now()) is None:
            await self.save(job)

    async def _export(self, job: Job, actor: Actor, folder: Path) -> None:
        repo = Repository(self.svc, actor)
        total = 0
        beat = asyncio.get_running_loop().time()
        for done, type in enumerate(job.types):
            writer = NdjsonWriter(folder, type)
            try:
                filters = job.filters.get(type) or [""]
                for k, flt in enumerate(filters):
                    async for page in self._pages(repo, job, type, flt):
                        if k:  # _typeFilter queries are ORed: a resource an earlier one matched is written once
                            page = await self._not_in_earlier(repo, job, type, filters[:k], page)
                        writer.write_page(v.body for v in page)
                        total += len(page)
                        if asyncio.get_running_loop().time() - beat >= HEARTBEAT_SECONDS:
                            beat = asyncio.get_running_loop().time()
                            await self._beat(job, f"{type}: {done + 1} of {len(job.types)} types, "
                                                  f"{total} resources written")
            finally:
                writer.close()
            job.output.extend({"type": type, "file": name, "count": n} for name, n in writer.files if n)
            await self._beat(job, f"{done + 1} of {len(job.types)} types, {total} resources written")

    async def _beat(self, job: Job, progress: str) -> None:
        if await self.svc.store.get_record(CANCELLED, job.id, now=self.now()) is not None:
            raise Cancelled
        job.heartbeat, job.progress = self.now(), progress
        await self.save(job)

    def _query(self, job: Job, type: str, flt: str, extra: list[tuple[str, str]], count: int) -> SearchQuery:
        pairs = [*parse_qsl(flt, keep_blank_values=True), ("_total", "none"), ("_count", str(count)), *extra]
        if job.since:
            pairs.append(("_lastUpdated", f"ge{job.since}"))
        query = parse(self.svc.definitions, type, pairs, default_count=count, max_count=count, strict=True)
        scope = membership(self.svc, job, type)
        return replace(query, params=(*query.params, scope)) if scope is not None else query

    async def _pages(self, repo: Repository, job: Job, type: str, flt: str
                     ) -> AsyncIterator[list[ResourceVersion]]:
        """The matches of one type (and one _typeFilter) page by page, keyset-paged on lastUpdated, up to
        the transaction time (in ascending order, the first later one ends the type: cheaper than a second
        range criterion the store would evaluate over every remaining row)."""
        boundary: str | None = None
        ties = 0
        while True:
            extra = [("_sort", "_lastUpdated")] + ([("_lastUpdated", f"ge{boundary}")] if boundary else [])
            query = replace(self._query(job, type, flt, extra, self.page), offset=ties)
            matches = (await repo.search(query)).matches
            before = [v for v in matches if v.last_updated <= job.transaction_time]
            if before:
                yield before
            if len(matches) < self.page or len(before) < len(matches):
                return
            last = matches[-1].last_updated
            if last == boundary:
                ties += len(matches)
            else:
                boundary, ties = last, sum(1 for v in matches if v.last_updated == last)

    async def _not_in_earlier(self, repo: Repository, job: Job, type: str, earlier: list[str],
                              page: list[ResourceVersion]) -> list[ResourceVersion]:
        seen: set[str] = set()
        chunk = max(1, min(ID_CHUNK, self.svc.settings.search_max_values))
        for start in range(0, len(page), chunk):
            ids = [v.id for v in page[start:start + chunk]]
            for flt in earlier:
                query = self._query(job, type, flt, [("_id", ",".join(ids))], len(ids))
                seen.update(v.id for v in (await repo.search(query)).matches)
        return [v for v in page if v.id not in seen]


def membership(svc: Services, job: Job, type: str) -> Criterion | None:
    """What ties a resource of ``type`` to the exported patients: nothing at system level; at Patient
    level a reference (through a Patient compartment parameter) to a Patient the caller sees; at Group
    level to a Patient the Group lists as a member. Chains carry the caller's visibility."""
    if job.level == "system":
        return None
    patients: Criterion = IdIn((_NO_ID,), negate=True) if job.level == "patient" \
        else Has("Group", "member", IdIn((job.group or _NO_ID,)))
    if type == "Patient":
        return None if job.level == "patient" else patients
    cd = svc.definitions.compartment_definition("Patient") or {}
    params = next((r.get("param") or [] for r in cd.get("resource", []) if r.get("code") == type), [])
    known = registry.params_for(svc.definitions, type)
    refs = [code for code in params if code in known and known[code].type == "reference"]
    return AnyOf(tuple(Chain(code, ("Patient",), patients) for code in refs))


def _seconds(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
