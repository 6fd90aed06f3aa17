"""``fhir-exchange load | reindex | migrate | backup | restore``: data in and out of a store."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from fhir_exchange.cli.options import settings_from_args
from fhir_exchange.cli.progress import Progress
from fhir_exchange.interactions.conformance import load_stored
from fhir_exchange.settings import Settings


def walk(paths: Sequence[str]) -> Iterator[tuple[Path, bool]]:
    """Each file with ``True`` when it was named explicitly, ``False`` when found in a folder."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from ((x, False) for x in sorted(x for x in p.rglob("*.json") if x.is_file()))
        else:
            yield p, True


def is_resource(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("resourceType"), str)


def cmd_load(args: argparse.Namespace) -> int:
    return asyncio.run(_load(args))


async def _load(args: argparse.Namespace) -> int:
    from fhir_exchange.api.app import build_router, build_services, load_definitions
    from fhir_exchange.errors import FhirError
    from fhir_exchange.fhir import jsonio

    settings = settings_from_args(args)
    svc = build_services(settings, load_definitions(settings))
    router = build_router(svc)
    await svc.open()
    await load_stored(svc)  # profiles and SearchParameters written to the server
    files = list(walk(args.paths))
    ok = failed = skipped = 0
    progress = Progress(len(files), "files")
    try:
        for n, (f, explicit) in enumerate(files, 1):
            try:
                doc: Any = jsonio.loads(f.read_bytes())
                if not explicit and not is_resource(doc):  # e.g. a manifest.json next to the examples
                    progress.note(f"{f}: skipped: not a FHIR resource (no resourceType)")
                    skipped += 1
                    progress.update(n)
                    continue
                req = _load_request(doc)
                resp = await router.dispatch(req)
                problem = _load_problem(resp.json())
                if problem:
                    failed += 1
                    progress.note(f"{f}: {problem}")
                else:
                    ok += 1
            except FhirError as err:
                failed += 1
                progress.note(f"{f}: {err.status} {err.diagnostics}")
            except (orjson.JSONDecodeError, OSError) as exc:
                failed += 1
                progress.note(f"{f}: {exc}")
            progress.update(n)
    finally:
        progress.close()
        await svc.close()
    print(f"Loaded {ok} of {len(files)} files in {progress.elapsed():.1f} s ({failed} failed"
          + (f", {skipped} skipped: not FHIR resources)" if skipped else ")"))
    return 1 if failed else 0


def _load_problem(answer: dict[str, Any] | None) -> str | None:
    """What went wrong inside a 200 answer: failed batch entries, or a message not answered ok."""
    if not answer or answer.get("resourceType") != "Bundle":
        return None
    entries = answer.get("entry") or []
    if answer.get("type") == "batch-response":
        failed = [e["response"]["status"] for e in entries if not str(e["response"]["status"]).startswith("2")]
        return f"{len(failed)} batch entries failed ({', '.join(failed[:3])})" if failed else None
    if answer.get("type") == "message" and entries:
        code = (entries[0].get("resource", {}).get("response") or {}).get("code")
        if code != "ok":
            issues = [i.get("diagnostics", "") for e in entries[1:] for i in e.get("resource", {}).get("issue", [])]
            return f"message answered {code}: {'; '.join(issues[:3])}"
    return None


def _load_request(doc: Any) -> Any:
    from fhir_exchange.interactions.request import FhirRequest

    if not isinstance(doc, dict) or "resourceType" not in doc:
        from fhir_exchange.errors import invalid

        raise invalid("not a FHIR resource")
    rt = doc["resourceType"]
    if rt == "Bundle" and doc.get("type") in ("transaction", "batch"):
        return FhirRequest("POST", "", body=doc, base_url="")
    if rt == "Bundle" and doc.get("type") == "message":  # as an exchange system sends it
        return FhirRequest("POST", "$process-message", body=doc, base_url="")
    if doc.get("id"):
        return FhirRequest("PUT", f"{rt}/{doc['id']}", body=doc, base_url="")
    return FhirRequest("POST", rt, body=doc, base_url="")


def cmd_reindex(args: argparse.Namespace) -> int:
    async def go() -> int:
        from fhir_exchange.api.app import build_services, load_definitions

        settings = settings_from_args(args)
        svc = build_services(settings, load_definitions(settings))
        await svc.open()
        await load_stored(svc)  # SearchParameters written to the server take part
        # The store reindexes in one transaction and reports only its end: the bar shows the time running.
        bar = Progress(await svc.store.count(args.type), "resources", desc="reindex")

        async def tick() -> None:
            while True:
                await asyncio.sleep(1)
                bar.bar.refresh()

        ticker = asyncio.create_task(tick())
        try:
            n = await svc.store.reindex(args.type)
            bar.update(n)
        finally:
            ticker.cancel()
            bar.close()
            await svc.close()
        print(f"Reindexed {n} resources in {bar.elapsed():.1f} s")
        return 0

    return asyncio.run(go())


def cmd_migrate(args: argparse.Namespace) -> int:
    """Copy every resource and every version from one store to another, then verify the copy."""

    async def go() -> int:
        from fhir_exchange.api.app import build_services, load_definitions
        from fhir_exchange.store import open_store
        from fhir_exchange.store.migrate import migrate

        target_settings = Settings.from_env(store_url=args.to_url)
        # with the search indexer
        target = build_services(target_settings, load_definitions(target_settings)).store
        source = open_store(args.from_url)
        await source.open()
        await target.open()
        started = time.perf_counter()
        bar: Progress | None = None

        def progress(n: int, total: int) -> None:  # n of total versions copied
            nonlocal bar
            bar = bar or Progress(total, "versions", started)
            bar.update(n)

        try:
            report = await migrate(source, target, progress=progress)
        finally:
            if bar:
                bar.close()
            await target.close()
            await source.close()
        print(f"Migrated {report.resources} resources, {report.versions} versions ({report.copied} new) "
              f"in {time.perf_counter() - started:.1f} s; verification: "
              f"{'every version identical' if report.ok else f'{len(report.mismatches)} mismatches'}")
        for m in report.mismatches[:20]:
            print(f"  differs: {m}", file=sys.stderr)
        return 0 if report.ok else 1

    return asyncio.run(go())


def _backup_targets(args: argparse.Namespace) -> tuple[str, str | None]:
    """The store's URL and, when auditing is on (it has a store only then), the audit store's."""
    settings = settings_from_args(args)
    return settings.resolved_store_url, settings.resolved_audit_store_url if settings.auth else None


def _file_progress(name: str) -> Callable[[int, int], None]:
    bars: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(Progress(total, "pages", desc=name))
        bars[0].update(done)
        if done >= total:
            bars[0].close()

    return progress


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the live store (and audit store) into a new folder, while the server runs."""
    from fhir_exchange.store.backup import BackupError, backup

    store_url, audit_url = _backup_targets(args)
    started = time.perf_counter()
    try:
        entries = backup(store_url, audit_url, Path(args.dest), progress=_file_progress, step=args.pages_per_step)
    except BackupError as exc:
        print(f"fhir-exchange: backup: {exc}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{e.name} {e.bytes / 1e6:.1f} MB" for e in entries)
    print(f"Backed up to {args.dest} in {time.perf_counter() - started:.1f} s ({sizes}; change feed at "
          f"{entries[0].last_change})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace the store (and audit store) by a backup; the server must be stopped."""
    from fhir_exchange.store.backup import BackupError, restore

    store_url, audit_url = _backup_targets(args)
    started = time.perf_counter()
    try:
        entries = restore(Path(args.src), store_url, None if args.skip_audit else audit_url,
                          progress=_file_progress)
    except BackupError as exc:
        print(f"fhir-exchange: restore: {exc}", file=sys.stderr)
        return 2
    print(f"Restored {', '.join(e.name for e in entries)} from {args.src} in {time.perf_counter() - started:.1f} s")
    return 0
