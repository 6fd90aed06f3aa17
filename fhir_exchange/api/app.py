"""The composition root and the HTTP edge.

``create_app(settings)`` loads definitions, opens the store and wires the router; nothing happens at
import time. Starlette lives only in this package: it turns HTTP into :class:`FhirRequest`, calls the
router, and turns :class:`FhirResponse` or :class:`FhirError` into HTTP. Every error body is an
OperationOutcome, including Starlette's own 404/405 and anything unexpected (500, no stack trace).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from fhir_exchange.api import limits, protocol, xml_bodies
from fhir_exchange.api.auth import SMART_CONFIGURATION_PATH, TOKEN_PATH, Authenticator
from fhir_exchange.api.bulk import BulkEndpoints
from fhir_exchange.api.health import Health
from fhir_exchange.api.instrument import AuditLag, TimedStore, TimedValidator
from fhir_exchange.api.landing import Landing
from fhir_exchange.api.metrics import MetricsEndpoint, allowed_networks
from fhir_exchange.api.negotiation import is_xml, request_kind, response_type
from fhir_exchange.api.shared import FreshDefinitions, RateLimiter, SharedMemory, end_with_supervisor
from fhir_exchange.api.telemetry import TRAIL_KEY, Telemetry
from fhir_exchange.bundles import install as install_bundles
from fhir_exchange.bundles.message import message_handlers
from fhir_exchange.clock import Clock, instant
from fhir_exchange.consult.profiles import consult_profiles
from fhir_exchange.consult.workflow import Settings as WorkflowSettings
from fhir_exchange.consult.workflow import Workflow
from fhir_exchange.definitions import Definitions
from fhir_exchange.definitions.definitions import CONFORMANCE_TYPES
from fhir_exchange.errors import Category, FhirError, operation_outcome
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions import conformance, consult
from fhir_exchange.interactions.access import isolation_guard, provenance_hook
from fhir_exchange.interactions.common import http_date
from fhir_exchange.interactions.everything import install as install_everything
from fhir_exchange.interactions.export import install as install_export
from fhir_exchange.interactions.export_job import Exports
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.stats import install as install_stats
from fhir_exchange.interactions.terminology import install as install_terminology
from fhir_exchange.interactions.validate import install as install_validate
from fhir_exchange.logs import configure as configure_logging
from fhir_exchange.notify import base_url as notify_base_url
from fhir_exchange.notify import guard as subscription_guard
from fhir_exchange.notify import install as install_notify
from fhir_exchange.notify.forward import Forwarder
from fhir_exchange.notify.notifier import Notifier
from fhir_exchange.notify.websocket import WebSocketHub
from fhir_exchange.portal.web import Portal
from fhir_exchange.search import limits as search_limits
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.security.access import Isolation
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.audit import AuditSink, AuditTrail, audit_event
from fhir_exchange.security.registry import Registry
from fhir_exchange.security.users import Users
from fhir_exchange.settings import Settings
from fhir_exchange.store import open_store
from fhir_exchange.validation import Validator
from fhir_exchange.validation.policy import ValidationPolicy

log = logging.getLogger("fhir_exchange")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def profile_folders() -> list[Path]:
    """profiles/ inside an installed wheel, or at the top of a source checkout."""
    for candidate in (_PACKAGE_DIR / "profiles", _PACKAGE_DIR.parent / "profiles"):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return [candidate]
    return []


def load_definitions(settings: Settings) -> Definitions:
    """The bundled packages, profiles/ and the packages the settings name."""
    return Definitions.load([*profile_folders(), *settings.packages], cache_dir=settings.resolved_cache_dir)


def build_services(settings: Settings, definitions: Definitions, clock: Clock | None = None) -> Services:
    """Everything an interaction may use, wired once: the store, the validator, the hooks."""
    indexer = make_indexer(definitions, settings.local_base_urls)  # absolute references on our base: Type/id
    store = open_store(settings.resolved_store_url, indexer, definitions.resource_types())
    # Search limits and read deadlines (search/limits.py, store/deadline.py), process-wide from the settings.
    search_limits.configure(search_limits.SearchLimits.from_settings(settings))
    set_timeout = getattr(store, "set_search_timeout", None)  # the SQLite and MongoDB adapters have one
    if set_timeout is not None:
        set_timeout(settings.search_timeout)
    set_synchronous = getattr(store, "set_synchronous", None)  # SQLite: durable (FULL) unless relaxed
    if set_synchronous is not None:
        set_synchronous(settings.sqlite_synchronous)
    policy = ValidationPolicy(example_urls=settings.validation_example_urls,
                              unknown_extensions=settings.validation_unknown_extensions,
                              extension_domains=settings.validation_extension_domains)
    svc = Services(settings=settings, definitions=definitions, store=store,
                   validator=Validator(definitions, policy=policy), clock=clock or Clock())
    if settings.consult_workflow:
        # First: it vouches for the consultant's changes to the requester's Task before isolation judges.
        svc.hooks.guards.append(consult.guard(consult_workflow(settings, definitions), svc))
    if settings.auth:
        svc.access = Isolation()
        svc.audit_store = open_store(settings.resolved_audit_store_url, indexer, ["AuditEvent"])
        svc.hooks.guards.append(isolation_guard)
        svc.hooks.on_write.append(provenance_hook)
    svc.hooks.guards.append(conformance.package_guard(definitions))
    conformance.install_expression_rules(svc.hooks)  # broken FHIRPath in a SearchParameter/SD: 422
    svc.hooks.guards.append(subscription_guard(settings, definitions))
    svc.hooks.after_commit.append(conformance.track(definitions))
    if settings.consult_profiles:
        svc.hooks.profile_selectors.append(consult_profiles)
    settings.required_profile_pairs  # noqa: B018 - a malformed setting fails at start-up, not on a write
    return svc


def consult_workflow(settings: Settings, definitions: Definitions) -> Workflow:
    return Workflow(definitions, WorkflowSettings(grace_days=settings.consult_grace_days,
                                                  networks=settings.consult_networks))


def build_router(svc: Services) -> Router:
    router = Router(svc)
    install_bundles(router)
    install_validate(router.operations)
    install_everything(router.operations)
    install_stats(router.operations)
    install_terminology(router.operations)
    install_notify(router)
    return router


_BASE_KEY = "fhir_exchange.base_url"


class FhirEndpoint:
    """The catch-all FHIR route: HTTP in, the actor established, :class:`FhirRequest` to the router,
    HTTP out, and the request's AuditEvent written before the answer leaves (fail closed)."""

    def __init__(self, router: Router, settings: Settings, auth: Authenticator, audit: AuditSink | None) -> None:
        self.router = router
        self.settings = settings
        self.auth = auth
        self.audit = audit
        self.audit_lag = AuditLag()
        self.parser = limits.Parser(settings.offload_bytes, settings.big_body_workers)  # big bodies off the loop
        self._bases: dict[tuple[Any, ...], str] = {}  # base URLs by (scheme, host, root path, server)

    def base_url(self, request: Request) -> str:
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/")
        scope = request.scope
        base: str | None = scope.get(_BASE_KEY)
        if base is None:  # once per request, and Starlette's URL object once per scheme, host and root path
            key = (scope.get("scheme"), request.headers.get("host"), scope.get("root_path"), scope.get("server"))
            base = self._bases.get(key)
            if base is None:
                if len(self._bases) > 256:  # the Host header is the client's: bounded
                    self._bases.clear()
                base = self._bases[key] = str(request.base_url).rstrip("/") + self.settings.base_path
            scope[_BASE_KEY] = base
        return base

    async def handle(self, request: Request) -> Response:
        pretty = request.query_params.get("_pretty") == "true"
        media = "application/fhir+json"
        actor: Actor = SYSTEM if not self.settings.auth else Actor(client_id="anonymous")
        trail = request.scope[TRAIL_KEY] = AuditTrail()  # read by the telemetry middleware (metrics)
        path = request.path_params.get("path", "")
        diagnostics = ""
        try:
            media = response_type(request.query_params.get("_format"), request.headers.get("accept"),
                                  request.headers.get("content-type"))
            actor = await self.auth.actor(request, self.base_url(request), path.strip("/"))
            freq = await self.to_fhir_request(request, actor, trail)
            resp = await self.dispatch(request, freq)
            response = self.to_http(resp, media, pretty, head=request.method == "HEAD")
        except FhirError as err:
            response, diagnostics = error_response(err, media, pretty), err.diagnostics
        except Exception:  # never a stack trace to the client
            log.exception("Unhandled error on %s %s", request.method, request.url.path)
            response = error_response(FhirError(Category.FAULT, "Internal server error"), media, pretty)
            diagnostics = "Internal server error"
        if is_xml(media):  # asked for in XML: the answer rendered so, errors included (api/xml_bodies.py)
            response = xml_bodies.respond(response, media, pretty, self.router.services.definitions)
        if self.audit is None:
            return response
        try:
            await self.record(request, actor, trail, response.status_code, diagnostics)
        except Exception:  # fail closed: no answer leaves without its audit record
            log.exception("The audit record of %s %s could not be written", request.method, request.url.path)
            failed = error_response(FhirError(Category.TRANSIENT, "The audit record could not be written: the "
                                              "request was not answered", headers={"Retry-After": "5"}), media, pretty)
            if is_xml(media):
                failed = xml_bodies.respond(failed, media, pretty, self.router.services.definitions)
            return failed
        return response

    async def dispatch(self, request: Request, freq: FhirRequest) -> FhirResponse:
        """A read (GET, HEAD) is cancelled when its client goes away, so that an abandoned search stops in
        the store (store/deadline.py) instead of holding a reader until its deadline. Writes run to their
        end: a client that left cannot learn the outcome, but a half-done write must not depend on it."""
        if request.method not in ("GET", "HEAD"):
            return await limits.dispatch_retrying(self.router, freq)  # a lost transaction race runs again
        # The read runs in this task; a watcher cancels it if the client leaves first. The watcher starts
        # only once the read waits for something: a read by id (a point read on this thread) finishes
        # first and never needs one (issue 19: two tasks and an asyncio.wait per read were a tenth of it).
        task = asyncio.current_task()
        assert task is not None
        state = {"finished": False, "left": False}
        watchers: list[asyncio.Future[None]] = []

        def client_left(watcher: asyncio.Future[None]) -> None:
            if not watcher.cancelled() and not state["finished"]:
                state["left"] = True
                task.cancel()

        def watch() -> None:
            gone = asyncio.ensure_future(_disconnected(request))
            gone.add_done_callback(client_left)
            watchers.append(gone)

        start = asyncio.get_running_loop().call_soon(watch)
        try:
            return await self.router.dispatch(freq)
        except asyncio.CancelledError:
            if not state["left"]:
                raise  # cancelled from outside (the server stopping): not ours to swallow
            task.uncancel()
            raise FhirError(Category.TRANSIENT, "The client closed the connection before the answer") from None
        finally:
            state["finished"] = True
            start.cancel()
            for gone in watchers:
                gone.cancel()

    async def record(self, request: Request, actor: Actor, trail: AuditTrail, status: int, diagnostics: str) -> None:
        assert self.audit is not None
        event = audit_event(actor=actor, trail=trail, method=request.method, path=request.url.path,
                            query=request.url.query, status=status, diagnostics=diagnostics,
                            address=request.client.host if request.client else None,
                            recorded=instant(self.router.services.clock.now()), server=self.base_url(request))
        with self.audit_lag.waiting():
            await self.audit.record(event, actor.institution, frozenset(trail.owners))

    async def token(self, request: Request) -> Response:
        return await self.auth.token(request, self.base_url(request))

    async def smart_configuration(self, request: Request) -> Response:
        return Response(orjson.dumps(self.auth.smart_configuration(self.base_url(request))),
                        media_type="application/json")

    async def to_fhir_request(self, request: Request, actor: Actor, trail: AuditTrail) -> FhirRequest:
        path = request.path_params.get("path", "")
        query = [(k, v) for k, v in request.query_params.multi_items()]
        headers = {k.lower(): v for k, v in request.headers.items()}
        body: Any = None
        if request.method in ("POST", "PUT", "PATCH"):
            raw = await self.read_body(request)
            if raw.strip():
                kind = request_kind(request.headers.get("content-type"), request.method)
                if kind == "form":
                    # POST [type]/_search: the form's parameters join the query (http.html#search).
                    query.extend(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
                else:
                    try:
                        body = await (xml_bodies.read(raw, self.router.services.definitions) if kind == "xml"
                                      else self.parser.loads(raw, check_depth))
                    except orjson.JSONDecodeError as exc:
                        raise FhirError(Category.INVALID, f"The body is not valid JSON: {exc}",
                                        code="structure") from None
                    freq = FhirRequest(request.method, path, query, headers, body, self.base_url(request), actor,
                                       trail)
                    # A big resource is validated in a worker thread now, not on the event loop later.
                    await self.parser.validate_ahead(Repository(self.router.services, actor), freq, len(raw))
                    return freq
            elif request.method in ("PUT", "PATCH") or (request.method == "POST" and not path.endswith("_search")
                                                       and "$" not in path):
                raise FhirError(Category.INVALID, "The request has no body", code="required")
        return FhirRequest(request.method, path, query, headers, body, self.base_url(request), actor, trail)

    async def read_body(self, request: Request) -> bytes:
        """The body within the size and time limits, inflated if gzip (api/limits.py)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise limits.too_large(limit)
        inflater = limits.Inflater(request.headers.get("content-encoding"), limit)
        try:
            return await limits.read_limited(request.stream(), inflater, self.settings.body_timeout)
        except ClientDisconnect:
            # Nobody is left to answer: one line, no traceback (it is not the server's error).
            log.info("The client of %s %s disconnected before sending its whole body", request.method,
                     request.url.path)
            raise FhirError(Category.INVALID, "The client disconnected during the upload") from None

    @staticmethod
    def to_http(resp: FhirResponse, media: str, pretty: bool, *, head: bool = False) -> Response:
        headers: dict[str, str] = {}
        if resp.etag:
            headers["ETag"] = resp.etag
        if resp.last_modified:
            headers["Last-Modified"] = http_date(resp.last_modified)
        if resp.location:  # 202 Accepted (an async kick-off, bulk export): where to poll
            headers["Content-Location" if resp.status == 202 else "Location"] = resp.location
        if resp.body is not None and not pretty:
            content: bytes = resp.body
        elif resp.resource is not None or resp.body is not None:
            doc = resp.resource if resp.resource is not None else jsonio.loads(resp.body or b"{}")
            content = jsonio.dumps(doc, pretty=pretty)
        else:
            content = b""
        # HEAD (``head``) answers exactly what GET would, headers included (Content-Type, Content-Length:
        # RFC 9110 9.3.2); the HTTP server (uvicorn, hypercorn) leaves the body off the wire.
        if resp.status == 304 or not content:
            return Response(status_code=resp.status, headers=headers)
        return Response(content, status_code=resp.status, headers=headers, media_type=f"{media}; charset=utf-8")


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (ASGI ``http.disconnect``). Only for requests whose
    body nobody reads: ``receive`` would hand over the body's chunks here."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


MAX_DEPTH = 254  # orjson writes no deeper nesting (it reads 1024 levels)


def check_depth(raw: bytes, body: Any) -> None:
    """Refuse a body nested deeper than the server can write back. orjson parses 1024 levels but writes
    254, and the validator recurses per level: such a body could be read but never stored or answered,
    and ended in a 500 (RecursionError, orjson's "Recursion limit reached")."""
    if raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:  # cannot be that deep: skip the check (C speed)
        return
    try:
        jsonio.dumps(body)  # orjson counts the depth for us, in C
    except TypeError:
        raise FhirError(Category.INVALID, f"The body is nested deeper than {MAX_DEPTH} levels",
                        code="too-costly") from None


def error_response(err: FhirError, media: str = "application/fhir+json", pretty: bool = False) -> Response:
    body = orjson.dumps(operation_outcome(err.issues), option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(body, status_code=err.status, headers=err.headers, media_type=f"{media}; charset=utf-8")


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(FhirError(Category.NOT_FOUND, f"No resource at {request.url.path}"))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    """A method no FHIR route takes (TRACE, CONNECT, ...): 405 with Starlette's Allow header."""
    allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
    return error_response(FhirError(Category.NOT_ALLOWED, f"Method {request.method} is not allowed",
                                    headers={"Allow": allow} if allow else {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(FhirError(Category.FAULT, "Internal server error"))


def create_app(settings: Settings | None = None, *, definitions: Definitions | None = None,
               clock: Clock | None = None) -> Starlette:
    """The application: ``definitions`` default to :func:`load_definitions` of the settings."""
    settings = settings or Settings.from_env()
    svc = build_services(settings, definitions or load_definitions(settings), clock)
    # Operations: store and validation times for /metrics (api/instrument.py), health and readiness.
    svc.store = TimedStore(svc.store)
    svc.validator = TimedValidator(svc.validator)
    svc.validator = limits.AheadValidator(svc.validator)  # big resources validated off the event loop
    health = Health(svc, feed_stale_after=max(10 * settings.feed_interval, 10.0))
    router = build_router(svc)
    registry = Registry(svc.store)
    audit = AuditSink(svc.audit_store, svc.clock.new_id) if svc.audit_store is not None else None
    # Rate limits and the definitions' generation, shared by the workers of one serve (api/shared.py).
    memory = SharedMemory.from_environment()
    limiter = RateLimiter(settings.rate_limit, memory)
    endpoint = FhirEndpoint(router, settings, Authenticator(settings, registry, svc.clock, limiter), audit)
    feed = conformance.DefinitionsFeed(svc)
    exports = Exports(svc)  # bulk export jobs (interactions/export.py, api/bulk.py)
    install_export(router.operations, exports)
    if memory.shared:  # other workers read the feed before their next request
        svc.hooks.after_commit.append(
            lambda change, version: memory.bump_generation() if change.type in CONFORMANCE_TYPES else None)

    async def follow_feed() -> None:
        while True:
            await asyncio.sleep(settings.feed_interval)
            try:
                await feed.poll()
                health.feed_polled()
            except Exception:  # a store hiccup must not end the follower: the next poll retries
                log.exception("Reading the change feed failed")

    sweep = consult.Sweep(svc, consult_workflow(settings, svc.definitions))
    # Subscriptions and message forwarding (fhir_exchange/notify/): woken by every local commit.
    notifier = Notifier(router, registry, audit, notify_base_url(settings))
    svc.hooks.after_commit.append(notifier.commit_hook())
    forwarder = Forwarder(svc, audit)
    forwarder.install(router.operations)
    message_handlers(router).routes.append(forwarder.route)
    notifier.extra_rounds.append(forwarder.round)
    hub = WebSocketHub(router, notifier.judge, audit)
    svc.hooks.after_commit.append(lambda change, version: hub.wake())

    async def subscription_socket(websocket: WebSocket) -> None:
        """R4 websocket channel (notify/websocket.py), authenticated as every FHIR request is."""
        request = Request({**websocket.scope, "type": "http"})
        try:
            actor = await endpoint.auth.actor(request, endpoint.base_url(request), "ws")
        except FhirError as err:
            await websocket.close(code=1008, reason=err.diagnostics[:120])
            return
        await websocket.accept()
        with suppress(WebSocketDisconnect):
            await hub.serve(websocket, actor)

    async def sweep_consults() -> None:
        while True:
            await asyncio.sleep(settings.consult_sweep_interval)
            try:
                await sweep.run()
            except Exception:  # the next sweep retries
                log.exception("The consult sweep failed")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not settings.auth:
            log.warning("AUTHENTICATION IS OFF (FHIR_EXCHANGE_AUTH=off): every caller acts as the system, sees "
                        "every institution's data and is not audited. Use it for local development only.")
        protocol.quiet_accept_errors(asyncio.get_running_loop())  # EMFILE: one line a minute, no tracebacks
        await svc.open()
        background: list[asyncio.Task[None]] = []
        delivering: asyncio.Task[None] | None = None
        try:
            await feed.start()
            await conformance.load_stored(svc)
            health.started()
            background.append(asyncio.create_task(follow_feed()))
            if settings.consult_workflow:
                background.append(asyncio.create_task(sweep_consults()))
            delivering = asyncio.create_task(notifier.run())
            background.append(asyncio.create_task(exports.sweep_forever()))
            yield
        finally:
            await exports.stop()
            if delivering is not None:
                notifier.stop()  # ends after its round; cancelled only if that round hangs
                with suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(delivering, settings.notify_timeout + 5)
            for task in background:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await svc.close()

    base = settings.base_path.rstrip("/")
    landing = Landing(settings)
    metrics_endpoint = MetricsEndpoint(svc, endpoint.audit_lag, allowed_networks(settings.metrics_allow))
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    # Outermost: every answer gets its X-Request-Id, its metrics and its access log line (api/telemetry.py).
    middleware = [Middleware(Telemetry, is_type=svc.definitions.is_resource_type)]
    if memory.shared:
        middleware.append(Middleware(FreshDefinitions, memory=memory, catch_up=feed.poll))
    if settings.cors_origins:
        origins = list(settings.cors_origins)
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins, allow_methods=methods,
            allow_headers=["Authorization", "Content-Type", "Accept", "If-Match", "If-None-Match", "If-None-Exist",
                           "If-Modified-Since", "Prefer", "X-Request-Id"],
            expose_headers=["ETag", "Location", "Last-Modified", "Content-Location", "WWW-Authenticate",
                            "Retry-After"]))
    pages = [  # outside the FHIR base (when there is one)
        Route("/healthz", health.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", health.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint.metrics, methods=["GET"]),
        *([Route("/", landing.page, methods=["GET", "HEAD"]),
           Route("/docs/{name}", landing.doc, methods=["GET", "HEAD"])] if base else []),
        *(Portal(router, settings, Users(svc.store), audit).routes() if settings.portal else []),
    ]
    app = Starlette(
        routes=[
            Route(f"{base}/{TOKEN_PATH}", endpoint.token, methods=["POST"]),
            Route(f"{base}/{SMART_CONFIGURATION_PATH}", endpoint.smart_configuration, methods=["GET"]),
            WebSocketRoute(f"{base}/ws", subscription_socket),
            # Health, metrics, the landing page and the portal (fhir_exchange/portal/: clients of the router as
            # their signed-in users) come first only without a base path, which the catch-all would take.
            *(pages if not base else []),
            *BulkEndpoints(exports, endpoint, base).routes(),
            Route(base or "/", endpoint.handle, methods=methods),
            Route(f"{base}/{{path:path}}", endpoint.handle, methods=methods),
            # Starlette tries routes in order: the pages outside the FHIR base after it (issue 19: the portal's
            # 30 routes tried first cost a read by id a tenth of its time); the catch-all cannot take theirs.
            *(pages if base else []),
        ],
        middleware=middleware,
        exception_handlers={404: _not_found, 405: _not_allowed, 500: _server_error},
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.router = router
    app.state.feed = feed
    app.state.health = health
    app.state.registry = registry
    app.state.sweep = sweep
    app.state.notifier = notifier
    app.state.exports = exports
    return app


def app_from_environment() -> Starlette:
    """One worker process of ``serve --workers N`` (uvicorn's factory, ``fhir_exchange.api.app:app_from_environment``):
    the settings from ``FHIR_EXCHANGE_*``, which ``serve`` sets from its options before starting the workers."""
    settings = Settings.from_env()
    end_with_supervisor()
    configure_logging(settings.log_level, settings.log_format)  # a spawned process starts unconfigured
    protocol.quiet_uvicorn()
    protocol.HardenedH11Protocol.header_timeout = settings.header_timeout
    return create_app(settings)
