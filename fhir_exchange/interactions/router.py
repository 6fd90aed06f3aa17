"""The FHIR router: a table of routes from (method, path shape) to interactions. It knows no HTTP.

The api layer and the batch/transaction processor both call :meth:`Router.dispatch`, and the
CapabilityStatement is generated from :data:`Router.routes`, so behaviour and declaration agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fhir_exchange.errors import Category, FhirError, not_found
from fhir_exchange.fhir.subsetting import SummaryElements, apply
from fhir_exchange.interactions import (
    capabilities,
    create,
    delete,
    history,
    patch,
    read,
    search,
    update,
    vread,
)
from fhir_exchange.interactions.operations import OperationRegistry
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.unit import UnitContext

Handler = Callable[..., Awaitable[FhirResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: tuple[str, ...]  # literal segments, or {type} {id} {vid} {op}
    interaction: str  # CapabilityStatement interaction code, or "operation"
    level: str  # system | type | instance
    handler: Handler


class Router:
    def __init__(self, services: Services, operations: OperationRegistry | None = None) -> None:
        self.services = services
        self.operations = operations or OperationRegistry()
        search.register_operations(self.operations)
        self.summaries = SummaryElements(services.definitions)
        self.capability_cache = capabilities.StatementCache()
        # POST [base] with a Bundle: set by the bundles module (batch / transaction).
        self.bundle_processor: Handler | None = None
        s = self
        self.routes: list[Route] = [
            Route("GET", ("metadata",), "capabilities", "system", s._capabilities),
            Route("GET", ("_history",), "history-system", "system", s._history_system),
            Route("GET", (), "search-system", "system", s._search_system),
            Route("POST", ("_search",), "search-system", "system", s._search_system),
            Route("POST", (), "transaction", "system", s._bundle),
            Route("POST", (), "batch", "system", s._bundle),
            Route("GET", ("{type}", "_history"), "history-type", "type", s._history_type),
            Route("GET", ("{type}",), "search-type", "type", s._search_type),
            Route("POST", ("{type}", "_search"), "search-type", "type", s._search_type),
            Route("POST", ("{type}",), "create", "type", s._create),
            Route("PUT", ("{type}",), "update", "type", s._conditional_update),
            Route("PATCH", ("{type}",), "patch", "type", s._conditional_patch),
            Route("DELETE", ("{type}",), "delete", "type", s._conditional_delete),
            Route("GET", ("{type}", "{id}"), "read", "instance", s._read),
            Route("PUT", ("{type}", "{id}"), "update", "instance", s._update),
            Route("PATCH", ("{type}", "{id}"), "patch", "instance", s._patch),
            Route("DELETE", ("{type}", "{id}"), "delete", "instance", s._delete),
            Route("GET", ("{type}", "{id}", "_history"), "history-instance", "instance", s._history_instance),
            # Compartment search (search.html#compartments): GET Patient/[id]/[type].
            Route("GET", ("{type}", "{id}", "{ctype}"), "search-type", "instance", s._search_compartment),
            Route("GET", ("{type}", "{id}", "_history", "{vid}"), "vread", "instance", s._vread),
        ]

    # -- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, req: FhirRequest, ctx: UnitContext | None = None) -> FhirResponse:
        """Route ``req`` to its interaction. With ``ctx`` the interaction joins that unit of work (the
        entries of a transaction Bundle); without, it runs in a store transaction of its own."""
        method = "GET" if req.method == "HEAD" else req.method
        segments = tuple(p for p in req.path.strip("/").split("/") if p) if req.path.strip("/") else ()
        op = self._operation(method, segments)
        if op is not None:
            if ctx is not None:
                # A 400, not a 501: the same operation works outside the Bundle, so the request is what
                # the client must change (and no client input may answer 5xx).
                raise FhirError(Category.INVALID, "Operations are not supported inside a transaction Bundle: "
                                "send them as requests of their own or in a batch", code="not-supported")
            return await op(req)
        allowed: set[str] = set()
        candidates = [(r, p) for r in self.routes if (p := _match(r.pattern, segments)) is not None]
        # A literal path ("metadata", "_history") is never read as a type or id of another route.
        literal = [(r, p) for r, p in candidates if not p]
        for route, params in literal or candidates:
            if route.method != method:
                allowed.add(route.method)
                continue
            resp = await route.handler(req, ctx, **params)
            return self._subset(req, resp) if route.interaction in ("read", "vread") else resp
        if allowed and not literal and not self.services.definitions.is_resource_type(segments[0]):
            # POST Unicorn/1: an unknown type is a 404 whatever the method (http.html, as HAPI FHIR answers).
            raise FhirError(Category.NOT_FOUND, f"Unknown resource type '{segments[0]}'", code="not-supported")
        if allowed:
            raise FhirError(Category.NOT_ALLOWED, f"Method {req.method} is not allowed on /{req.path}",
                            headers={"Allow": ", ".join(sorted(allowed))})
        if segments and not self.services.definitions.is_resource_type(segments[0]):
            raise FhirError(Category.NOT_FOUND, f"Unknown resource type '{segments[0]}'", code="not-supported")
        raise not_found(f"No FHIR interaction at /{req.path}")

    def _operation(
        self, method: str, segments: tuple[str, ...]
    ) -> Callable[[FhirRequest], Awaitable[FhirResponse]] | None:
        if not segments or not segments[-1].startswith("$"):
            return None
        name = segments[-1][1:]
        op = self.operations.get(name)
        level = {1: "system", 2: "type", 3: "instance"}.get(len(segments))
        if op is None or level is None:
            raise FhirError(Category.NOT_FOUND, f"Unknown operation ${name} at this level", code="not-supported")
        if level != "system":
            read.check_type(self.services, segments[0])
        if not getattr(op, level) or (op.resource_types and level != "system"
                                      and segments[0] not in op.resource_types):
            raise FhirError(Category.NOT_FOUND, f"Operation ${name} is not defined at /{'/'.join(segments)}",
                            code="not-supported")
        if method not in op.methods:
            raise FhirError(Category.NOT_ALLOWED, f"Operation ${name} does not accept {method}",
                            headers={"Allow": ", ".join(op.methods)})
        type_ = segments[0] if len(segments) >= 2 else None
        id_ = segments[1] if len(segments) == 3 else None

        async def run(req: FhirRequest) -> FhirResponse:
            return await op.handler(self.services, req, type_, id_)

        return run

    def _subset(self, req: FhirRequest, resp: FhirResponse) -> FhirResponse:
        """_summary / _elements on read-like responses (search applies them per entry)."""
        summary = req.query_value("_summary")
        elements = req.query_value("_elements")
        if (not summary or summary == "false") and not elements:
            return resp
        doc = resp.json()
        if doc is None:
            return resp
        resp.resource = apply(self.summaries, dict(doc), summary, elements.split(",") if elements else None)
        resp.body = None
        return resp

    # -- route handlers ------------------------------------------------------------------------

    async def _capabilities(self, req: FhirRequest, ctx: UnitContext | None = None) -> FhirResponse:
        return FhirResponse(200, body=self.capability_cache.get(self, req))

    async def _history_system(self, req: FhirRequest, ctx: UnitContext | None = None) -> FhirResponse:
        return await history.history(self.services, req)

    async def _history_type(self, req: FhirRequest, ctx: UnitContext | None, type: str) -> FhirResponse:
        return await history.history(self.services, req, type)

    async def _history_instance(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str) -> FhirResponse:
        return await history.history(self.services, req, type, id)

    async def _search_system(self, req: FhirRequest, ctx: UnitContext | None = None) -> FhirResponse:
        return await search.search(self.services, req, None, self.summaries, ctx)

    async def _search_type(self, req: FhirRequest, ctx: UnitContext | None, type: str) -> FhirResponse:
        return await search.search(self.services, req, type, self.summaries, ctx)

    async def _search_compartment(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str,
                                  ctype: str) -> FhirResponse:
        return await search.search(self.services, req, ctype, self.summaries, ctx, compartment=(type, id))

    def declared_search_params(self, type: str) -> list[dict[str, Any]]:
        return search.declared_search_params(self.services, type)

    def declared_includes(self, type: str) -> tuple[list[str], list[str]]:
        return search.declared_includes(self.services, type)

    async def _bundle(self, req: FhirRequest, ctx: UnitContext | None = None) -> FhirResponse:
        if self.bundle_processor is None:
            raise FhirError(Category.NOT_IMPLEMENTED, "Batch and transaction Bundles are not supported yet",
                            code="not-supported")
        return await self.bundle_processor(req, ctx)

    async def _create(self, req: FhirRequest, ctx: UnitContext | None, type: str) -> FhirResponse:
        return await create.create(self.services, req, type, ctx)

    async def _conditional_update(self, req: FhirRequest, ctx: UnitContext | None, type: str) -> FhirResponse:
        return await update.conditional_update(self.services, req, type, ctx)

    async def _conditional_patch(self, req: FhirRequest, ctx: UnitContext | None, type: str) -> FhirResponse:
        return await patch.patch(self.services, req, type, None, ctx)

    async def _conditional_delete(self, req: FhirRequest, ctx: UnitContext | None, type: str) -> FhirResponse:
        return await delete.conditional_delete(self.services, req, type, ctx)

    async def _read(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str) -> FhirResponse:
        return await read.read(self.services, req, type, id, ctx)

    async def _update(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str) -> FhirResponse:
        return await update.update(self.services, req, type, id, ctx)

    async def _patch(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str) -> FhirResponse:
        return await patch.patch(self.services, req, type, id, ctx)

    async def _delete(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str) -> FhirResponse:
        return await delete.delete(self.services, req, type, id, ctx)

    async def _vread(self, req: FhirRequest, ctx: UnitContext | None, type: str, id: str, vid: str) -> FhirResponse:
        return await vread.vread(self.services, req, type, id, vid)


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, Any] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, Any] = {}
    for p, s in zip(pattern, segments, strict=True):
        if p.startswith("{"):
            if s.startswith(("_", "$")) and p != "{vid}":
                return None
            params[p[1:-1]] = s
        elif p != s:
            return None
    return params
