"""Command line: ``fhir-exchange serve | load | reindex | migrate | backup | restore | validate | institution |
client | network | user | demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from fhir_exchange.interactions.conformance import load_stored
from fhir_exchange.logs import FORMATS
from fhir_exchange.logs import configure as configure_logging
from fhir_exchange.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from options and ``FHIR_EXCHANGE_*``; a bad value ends the command with a one-line
    message and status 2 (as argparse does for bad options), not a traceback."""
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
            store_url=getattr(args, "store", None),
            auth=False if getattr(args, "no_auth", False) else None,
            certfile=getattr(args, "certfile", None),
            keyfile=getattr(args, "keyfile", None),
            client_ca=getattr(args, "client_ca", None),
            workers=getattr(args, "workers", None),
        )
        level = settings.log_level.lower()
        if level != "trace" and not isinstance(logging.getLevelName(level.upper()), int):  # trace: uvicorn's
            raise ValueError(f"unknown log level {settings.log_level!r} (use trace, debug, info, warning, error)")
        if settings.log_format not in FORMATS:
            raise ValueError(f"unknown log format {settings.log_format!r} (use {' or '.join(FORMATS)})")
    except ValueError as exc:
        print(f"fhir-exchange: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def _add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder of the embedded SQLite store (env FHIR_EXCHANGE_DATA_DIR)")
    p.add_argument("--store", help="store URL: sqlite:///file.db or mongodb://... (env FHIR_EXCHANGE_STORE_URL)")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fhir_exchange.api import protocol, workers
    from fhir_exchange.api.app import create_app

    settings = _settings(args)
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


# -- institutions and clients ---------------------------------------------------------------------

def _admin_store(args: argparse.Namespace) -> tuple[Settings, Any]:
    from fhir_exchange.api.app import build_router, build_services, load_definitions

    settings = _settings(args)
    svc = build_services(settings, load_definitions(settings))
    return settings, build_router(svc)


def _base_url(settings: Settings) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    scheme = "https" if settings.certfile else "http"
    return f"{scheme}://{settings.host}:{settings.port}{settings.base_path}"


def _run_admin(args: argparse.Namespace, work: Callable[[Settings, Any, Any], Awaitable[Any]]) -> int:
    from fhir_exchange.api.enrolment import EnrolmentError
    from fhir_exchange.security.registry import Registry

    async def go() -> int:
        settings, router = _admin_store(args)
        svc = router.services
        await svc.open()
        try:
            result = await work(settings, router, Registry(svc.store))
        except EnrolmentError as exc:
            print(f"fhir-exchange: {exc}", file=sys.stderr)
            return 1
        finally:
            await svc.close()
        if isinstance(result, list):
            for item in result:
                print(orjson.dumps(item).decode())
        elif result is not None:
            print(orjson.dumps(result).decode())
        return 0

    return asyncio.run(go())


def cmd_institution_add(args: argparse.Namespace) -> int:
    from fhir_exchange.api.enrolment import add_institution

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return await add_institution(router, registry, name=args.name, hira_id=args.hira_id,
                                     connection=args.connection, endpoint_address=args.endpoint_address,
                                     base_url=_base_url(settings))

    return _run_admin(args, work)


def cmd_institution_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return [asdict(i) for i in await registry.institutions(_now(router))]

    return _run_admin(args, work)


def _now(router: Any) -> str:
    from fhir_exchange.clock import instant

    return instant(router.services.clock.now())


def cmd_client_add(args: argparse.Namespace) -> int:
    from fhir_exchange.api.auth import TOKEN_PATH
    from fhir_exchange.api.enrolment import EnrolmentError, add_client

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        jwks = None
        if args.jwks:
            try:
                jwks = orjson.loads(Path(args.jwks).read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise EnrolmentError(f"--jwks {args.jwks}: {exc}") from None
        return await add_client(registry, institution=args.institution, jwks=jwks, scopes=args.scope,
                                admin=args.admin, cert_subject=args.cert_subject,
                                token_endpoint=f"{_base_url(settings)}/{TOKEN_PATH}", now=_now(router))

    return _run_admin(args, work)


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    from fhir_exchange.api.enrolment import EnrolmentError

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        client = await registry.set_disabled(args.client_id, disabled, _now(router))
        if client is None:
            raise EnrolmentError(f"No client {args.client_id}")
        return {"client_id": client.client_id, "disabled": client.disabled}

    return _run_admin(args, work)


def cmd_client_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_client_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def cmd_client_list(args: argparse.Namespace) -> int:
    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return [{k: v for k, v in c.to_json().items() if k != "jwks"} for c in await registry.clients(_now(router))]

    return _run_admin(args, work)


def cmd_network_add(args: argparse.Namespace) -> int:
    from fhir_exchange.api.enrolment import add_network

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return await add_network(router, registry, hub=args.hub, partner=args.partner, specialties=args.specialty,
                                 base_url=_base_url(settings))

    return _run_admin(args, work)


# -- portal users ---------------------------------------------------------------------------------

def _users(work: Callable[[Settings, Any, Any, Any], Awaitable[Any]]) -> Callable[[Settings, Any, Any], Awaitable[Any]]:
    """Run ``work`` with the portal's accounts on the same store; an AccountError is the command's error."""
    from fhir_exchange.api.enrolment import EnrolmentError
    from fhir_exchange.security.users import AccountError, Users

    async def run(settings: Settings, router: Any, registry: Any) -> Any:
        try:
            return await work(settings, router, registry, Users(router.services.store))
        except AccountError as exc:
            raise EnrolmentError(str(exc)) from None

    return run


def cmd_user_add(args: argparse.Namespace) -> int:
    from fhir_exchange.portal.accounts import add_user

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else ""
    if not args.password_stdin:
        print("fhir-exchange: give the password on standard input with --password-stdin", file=sys.stderr)
        return 2

    async def work(settings: Settings, router: Any, registry: Any, users: Any) -> Any:
        return await add_user(router, registry, users, institution=args.institution, username=args.username,
                              password=password, name=args.name, practitioner_role=args.practitioner_role,
                              department=args.department, base_url=_base_url(settings))

    return _run_admin(args, _users(work))


def _user_change(args: argparse.Namespace, change: str) -> int:
    async def work(settings: Settings, router: Any, registry: Any, users: Any) -> Any:
        now = _now(router)
        if change == "unlock":
            user = await users.unlock(args.username, now)
        else:
            user = await users.set_disabled(args.username, change == "disable", now)
        return user.public()

    return _run_admin(args, _users(work))


def cmd_user_disable(args: argparse.Namespace) -> int:
    return _user_change(args, "disable")


def cmd_user_enable(args: argparse.Namespace) -> int:
    return _user_change(args, "enable")


def cmd_user_unlock(args: argparse.Namespace) -> int:
    return _user_change(args, "unlock")


def cmd_user_list(args: argparse.Namespace) -> int:
    async def work(settings: Settings, router: Any, registry: Any, users: Any) -> Any:
        return [u.public() for u in await users.list(_now(router))]

    return _run_admin(args, _users(work))


def cmd_demo(args: argparse.Namespace) -> int:
    from fhir_exchange.api.demo import DemoError, run_demo

    settings = _settings(args)
    try:
        asyncio.run(run_demo(settings, _base_url(settings), out=print))
    except DemoError as exc:
        print(f"fhir-exchange: {exc}", file=sys.stderr)
        return 1
    return 0


def _walk(paths: Sequence[str]) -> Iterator[tuple[Path, bool]]:
    """Each file with ``True`` when it was named explicitly, ``False`` when found in a folder."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from ((x, False) for x in sorted(x for x in p.rglob("*.json") if x.is_file()))
        else:
            yield p, True


def _is_resource(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("resourceType"), str)


def cmd_load(args: argparse.Namespace) -> int:
    return asyncio.run(_load(args))


async def _load(args: argparse.Namespace) -> int:
    from fhir_exchange.api.app import build_router, build_services, load_definitions
    from fhir_exchange.errors import FhirError
    from fhir_exchange.fhir import jsonio

    settings = _settings(args)
    svc = build_services(settings, load_definitions(settings))
    router = build_router(svc)
    await svc.open()
    await load_stored(svc)  # profiles and SearchParameters written to the server
    files = list(_walk(args.paths))
    ok = failed = skipped = 0
    progress = _Progress(len(files), "files")
    try:
        for n, (f, explicit) in enumerate(files, 1):
            try:
                doc: Any = jsonio.loads(f.read_bytes())
                if not explicit and not _is_resource(doc):  # e.g. a manifest.json next to the examples
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


class _Progress:
    """A progress bar (tqdm) on stderr counting ``unit`` (files, versions, pages) out of ``total`` (None: not
    known, a counter). On a terminal it is redrawn in place, elsewhere (a log file, a pipe) every few
    seconds; either way the output ends with a newline when it closes, and :meth:`note` prints a message
    on a line of its own."""

    def __init__(self, total: int | None, unit: str, started: float | None = None, desc: str | None = None) -> None:
        from tqdm import tqdm

        self.started = time.perf_counter() if started is None else started
        tty = sys.stderr.isatty()
        # "12/40 files" rather than tqdm's "12/40 [...]": the count says what it counts.
        counted = "{n_fmt}/{total_fmt}{unit}" if total is not None else "{n_fmt}{unit}"
        self.bar = tqdm(total=total, unit=f" {unit}", desc=desc, file=sys.stderr, leave=True, dynamic_ncols=tty,
                        mininterval=0.1 if tty else 5.0, ascii=not tty,
                        bar_format="{l_bar}{bar}| " + counted + " [{elapsed}<{remaining}, {rate_fmt}]"
                        if total is not None else "{desc}" + counted + " [{elapsed}, {rate_fmt}]")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, n: int) -> None:
        """``n`` done so far (not an increment)."""
        if self.bar.total is not None and n > self.bar.total:  # the total grew (a live source)
            self.bar.total = n
        self.bar.update(n - self.bar.n)

    def note(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def cmd_reindex(args: argparse.Namespace) -> int:
    async def go() -> int:
        from fhir_exchange.api.app import build_services, load_definitions

        settings = _settings(args)
        svc = build_services(settings, load_definitions(settings))
        await svc.open()
        await load_stored(svc)  # SearchParameters written to the server take part
        # The store reindexes in one transaction and reports only its end: the bar shows the time running.
        bar = _Progress(await svc.store.count(args.type), "resources", desc="reindex")

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
        bar: _Progress | None = None

        def progress(n: int, total: int) -> None:  # n of total versions copied
            nonlocal bar
            bar = bar or _Progress(total, "versions", started)
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
    settings = _settings(args)
    return settings.resolved_store_url, settings.resolved_audit_store_url if settings.auth else None


def _file_progress(name: str) -> Callable[[int, int], None]:
    bars: list[_Progress] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(_Progress(total, "pages", desc=name))
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


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate files the way the server does on write and in $validate, without a server."""
    from fhir_exchange.api.app import profile_folders
    from fhir_exchange.consult.profiles import consult_profiles
    from fhir_exchange.definitions import Definitions
    from fhir_exchange.fhir import jsonio
    from fhir_exchange.validation import Validator

    settings = Settings.from_env()
    definitions = Definitions.load([*profile_folders(), *settings.packages, *args.package],
                                   cache_dir=settings.resolved_cache_dir)
    for url in args.profile:
        if definitions.resolve(url) is None:
            print(f"unknown profile: {url}", file=sys.stderr)
            return 2
    validator = Validator(definitions)
    counts = {"error": 0, "warning": 0, "information": 0}
    checked = failed = skipped = 0
    for f, explicit in _walk(args.paths):
        try:
            doc = jsonio.loads(f.read_bytes())
        except (orjson.JSONDecodeError, OSError) as exc:
            print(f"{f}: fatal: {exc}")
            checked += 1
            failed += 1
            continue
        if not explicit and not _is_resource(doc):  # e.g. a manifest.json next to the examples
            print(f"{f}: skipped: not a FHIR resource (no resourceType)", file=sys.stderr)
            skipped += 1
            continue
        checked += 1
        if not isinstance(doc, dict):
            print(f"{f}: fatal: not a FHIR resource (a JSON object)")
            failed += 1
            continue
        profiles = [*args.profile, *(consult_profiles(doc) if settings.consult_profiles else [])]
        issues = validator.validate(doc, profiles=profiles)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        failed += bool(errors)
        for i in issues:
            sev = "error" if i.severity == "fatal" else i.severity
            counts[sev] = counts.get(sev, 0) + 1
            if args.quiet and sev != "error":
                continue
            where = f" @ {i.expression[0]}" if i.expression else ""
            print(f"{f}: {i.severity}: {i.diagnostics}{where}")
        if not errors and not args.quiet:
            print(f"{f}: valid")
    print(f"{checked} files: {checked - failed} valid, {failed} with errors "
          f"({counts['error']} errors, {counts['warning']} warnings)"
          + (f"; {skipped} skipped (not FHIR resources)" if skipped else ""))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-exchange", description="FHIR R4 server for remote consultation")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the FHIR API at http://HOST:PORT/fhir")
    serve.add_argument("--host", help="interface (env FHIR_EXCHANGE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env FHIR_EXCHANGE_PORT, default 8080)")
    serve.add_argument("--no-auth", action="store_true",
                       help="serve without authentication: every caller acts as the system (development only; "
                            "env FHIR_EXCHANGE_AUTH=off)")
    serve.add_argument("--certfile", help="serve TLS with this certificate (PEM; env FHIR_EXCHANGE_CERTFILE)")
    serve.add_argument("--keyfile", help="the certificate's private key (PEM; env FHIR_EXCHANGE_KEYFILE)")
    serve.add_argument("--client-ca", help="verify client certificates against these CAs (PEM) and map a "
                                           "registered subject to its client (env FHIR_EXCHANGE_CLIENT_CA)")
    serve.add_argument("--workers", type=int, help="worker processes on the one store (env FHIR_EXCHANGE_WORKERS; "
                                                   "default: one per core; 1: a single process)")
    _add_store_options(serve)
    serve.set_defaults(func=cmd_serve)
    institution = sub.add_parser("institution", help="register institutions of the network")
    isub = institution.add_subparsers(dest="action", required=True)
    iadd = isub.add_parser("add", help="register an institution; prints its organization id as JSON")
    iadd.add_argument("--name", required=True)
    iadd.add_argument("--hira-id", required=True, help="HIRA institution identifier (8 digits)")
    iadd.add_argument("--connection", required=True, choices=["portal", "emr", "exchange"])
    iadd.add_argument("--endpoint-address", help="the institution's endpoint URL (EMR or exchange system base)")
    _add_store_options(iadd)
    iadd.set_defaults(func=cmd_institution_add)
    ilist = isub.add_parser("list", help="the registered institutions, as JSON lines")
    _add_store_options(ilist)
    ilist.set_defaults(func=cmd_institution_list)
    client = sub.add_parser("client", help="register and disable system clients (SMART Backend Services)")
    csub = client.add_subparsers(dest="action", required=True)
    cadd = csub.add_parser("add", help="register a client of an institution; prints client_id and token_endpoint")
    cadd.add_argument("--institution", required=True, help="the institution's Organization id")
    cadd.add_argument("--jwks", help="file holding the client's public JWKS (RS384 or ES384 keys)")
    cadd.add_argument("--scope", action="append", default=[],
                      help="a SMART v2 system scope it may be granted (repeatable; default system/*.cruds)")
    cadd.add_argument("--admin", action="store_true",
                      help="may manage conformance resources, run $reindex and register institutions/clients")
    cadd.add_argument("--cert-subject", help="subject of the client certificate it may also authenticate with")
    _add_store_options(cadd)
    cadd.set_defaults(func=cmd_client_add)
    cdis = csub.add_parser("disable", help="refuse the client's tokens from now on")
    cdis.add_argument("client_id")
    _add_store_options(cdis)
    cdis.set_defaults(func=cmd_client_disable)
    cen = csub.add_parser("enable", help="accept the client's tokens again")
    cen.add_argument("client_id")
    _add_store_options(cen)
    cen.set_defaults(func=cmd_client_enable)
    clist = csub.add_parser("list", help="the registered clients, as JSON lines (keys not shown)")
    _add_store_options(clist)
    clist.set_defaults(func=cmd_client_list)
    network = sub.add_parser("network", help="consult networks: which partner asks which hub")
    nsub = network.add_subparsers(dest="action", required=True)
    nadd = nsub.add_parser("add", help="affiliate a partner with a hub (an OrganizationAffiliation written as the "
                                       "hub); prints its id as JSON")
    nadd.add_argument("--hub", required=True, help="the hub's Organization id (a registered institution)")
    nadd.add_argument("--partner", required=True, help="the partner's Organization id (a registered institution)")
    nadd.add_argument("--specialty", action="append", default=[], metavar="CODE",
                      help="a HIRA medical department code the hub offers the partner (repeatable; default: all)")
    _add_store_options(nadd)
    nadd.set_defaults(func=cmd_network_add)
    user = sub.add_parser("user", help="portal accounts: practitioners of an institution who sign in at /portal")
    usub = user.add_subparsers(dest="action", required=True)
    uadd = usub.add_parser("add", help="make a portal account (and its Practitioner and PractitionerRole unless "
                                       "--practitioner-role names one); reads the password from standard input")
    uadd.add_argument("--institution", required=True, help="the institution's Organization id")
    uadd.add_argument("--username", required=True, help="2 to 64 characters: lower case letters, digits, . _ @ -")
    uadd.add_argument("--password-stdin", action="store_true", help="read the password (one line) from stdin")
    uadd.add_argument("--practitioner-role", help="an existing PractitionerRole of the institution the user acts as")
    uadd.add_argument("--name", help="the practitioner's name as shown on pages (default: the username)")
    uadd.add_argument("--department", help="HIRA medical department code of a new PractitionerRole (e.g. 01)")
    _add_store_options(uadd)
    uadd.set_defaults(func=cmd_user_add)
    for action, func, text in (("disable", cmd_user_disable, "refuse the account's sign-ins and end its sessions"),
                               ("enable", cmd_user_enable, "let a disabled account sign in again"),
                               ("unlock", cmd_user_unlock, "end a lockout after repeated wrong passwords")):
        uact = usub.add_parser(action, help=text)
        uact.add_argument("username")
        _add_store_options(uact)
        uact.set_defaults(func=func)
    ulist = usub.add_parser("list", help="the portal accounts, as JSON lines (no password hashes)")
    _add_store_options(ulist)
    ulist.set_defaults(func=cmd_user_list)
    demo = sub.add_parser("demo", help="seed three pilot-like networks and walk two consults end to end "
                                       "(use a fresh --data-dir)")
    _add_store_options(demo)
    demo.set_defaults(func=cmd_demo)
    load = sub.add_parser("load", help="load resources and Bundles (files or folders) into the store")
    load.add_argument("paths", nargs="+")
    _add_store_options(load)
    load.set_defaults(func=cmd_load)
    reindex = sub.add_parser("reindex", help="re-extract search index values (after SearchParameter changes)")
    reindex.add_argument("--type", help="only this resource type")
    _add_store_options(reindex)
    reindex.set_defaults(func=cmd_reindex)
    migrate = sub.add_parser("migrate", help="copy every resource and version to another store, then verify")
    migrate.add_argument("--from", dest="from_url", required=True, help="source store URL, e.g. sqlite:///data/fhir.db")
    migrate.add_argument("--to", dest="to_url", required=True, help="target store URL, e.g. mongodb://host/fhir")
    migrate.set_defaults(func=cmd_migrate)
    bak = sub.add_parser("backup", help="copy the live SQLite store and audit store into a new folder (the server "
                                        "may keep running); MongoDB: mongodump, see docs/operations.md")
    bak.add_argument("dest", help="a new or empty folder")
    bak.add_argument("--pages-per-step", type=int, default=1024,
                     help="database pages copied per step (default 1024, 4 MiB): the progress bar's resolution")
    _add_store_options(bak)
    bak.set_defaults(func=cmd_backup)
    res = sub.add_parser("restore", help="replace the SQLite store and audit store by a backup (stop the server first)")
    res.add_argument("src", help="a folder written by fhir-exchange backup")
    res.add_argument("--skip-audit", action="store_true",
                     help="keep the current audit store (restore the resources only)")
    _add_store_options(res)
    res.set_defaults(func=cmd_restore)
    validate = sub.add_parser("validate", help="validate resources offline, as $validate does; exit 1 on errors")
    validate.add_argument("paths", nargs="+", help="JSON files or folders")
    validate.add_argument("--profile", action="append", default=[], help="canonical URL of a profile to check")
    validate.add_argument("--package", action="append", default=[],
                          help="extra FHIR package (.tgz or folder) or folder of conformance resources")
    validate.add_argument("--quiet", action="store_true", help="print errors only")
    validate.set_defaults(func=cmd_validate)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
