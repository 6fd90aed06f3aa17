"""The FHIR router: the only entry to the interactions. It knows no HTTP.

The api layer, batch and transaction entries, the entries of a message and the portal all call
:meth:`Router.dispatch` with a :class:`FhirRequest` naming its actor. The router makes the request's
:class:`Repository` (joined to the caller's unit of work when one is given: a transaction's entries)
and calls one interaction from its :class:`RouteTable`, which the CapabilityStatement is generated
from, so behaviour and declaration agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhir_exchange.errors import Category, FhirError, invalid, not_found
from fhir_exchange.interactions import capabilities, create, delete, history, patch, read, search, update, vread
from fhir_exchange.interactions.operations import OperationRegistry
from fhir_exchange.interactions.repository import Repository, Unit
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.routes import Route, RouteTable, match
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.subsetting import SummaryElements, apply
from fhir_exchange.security import scopes
from fhir_exchange.security.actor import Actor

# The SMART v2 permission each interaction needs on its type (security/scopes.py).
_PERMISSIONS = {"read": "r", "vread": "r", "history-instance": "r", "search-type": "s", "history-type": "s",
                "search-system": "s", "history-system": "s", "create": "c", "update": "u", "patch": "u",
                "delete": "d"}


def check_scope(actor: Actor, type: str | None, permission: str) -> None:
    """Refuse (403) what the actor's token does not permit; inside Bundles too (entries come here)."""
    if actor.system or scopes.permits(actor.scopes, type, permission):
        return
    what = type or "every type"
    raise FhirError(Category.FORBIDDEN, f"The access token's scopes do not permit '{permission}' on {what} "
                    f"(SMART v2: system/{type or '*'}.{permission})", code="forbidden")


class Router:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.table = RouteTable()
        self.summaries = SummaryElements(services.definitions)
        self._statement = capabilities.StatementCache()
        # What higher layers install on this router (bundles/message.py: the message handlers), kept
        # here and not in a module-level map keyed by router, which would keep every router alive.
        self.installed: dict[str, Any] = {}
        self._by_length: tuple[int, dict[int, list[Route]]] = (-1, {})  # routes by segment count (see _routes)
        search.register_operations(self.table.operations)
        summaries = self.summaries
        for route in [
            Route("GET", ("metadata",), "capabilities", "system", self._capabilities),
            Route("GET", ("_history",), "history-system", "system", history.history),
            Route("GET", (), "search-system", "system",
                  lambda repo, req: search.search(repo, req, None, summaries)),
            Route("POST", ("_search",), "search-system", "system",
                  lambda repo, req: search.search(repo, req, None, summaries)),
            Route("GET", ("{type}", "_history"), "history-type", "type", history.history),
            Route("GET", ("{type}",), "search-type", "type",
                  lambda repo, req, type: search.search(repo, req, type, summaries)),
            Route("POST", ("{type}", "_search"), "search-type", "type",
                  lambda repo, req, type: search.search(repo, req, type, summaries)),
            Route("POST", ("{type}",), "create", "type", create.create),
            Route("PUT", ("{type}",), "update", "type", update.conditional_update),
            Route("PATCH", ("{type}",), "patch", "type", lambda repo, req, type: patch.patch(repo, req, type, None)),
            Route("DELETE", ("{type}",), "delete", "type", delete.conditional_delete),
            Route("GET", ("{type}", "{id}"), "read", "instance", read.read),
            Route("PUT", ("{type}", "{id}"), "update", "instance", update.update),
            Route("PATCH", ("{type}", "{id}"), "patch", "instance", patch.patch),
            Route("DELETE", ("{type}", "{id}"), "delete", "instance", delete.delete),
            Route("GET", ("{type}", "{id}", "_history"), "history-instance", "instance", history.history),
            # Compartment search (search.html#compartments): GET Patient/[id]/[type].
            Route("GET", ("{type}", "{id}", "{ctype}"), "search-type", "instance",
                  lambda repo, req, type, id, ctype: search.search(repo, req, ctype, summaries,
                                                                   compartment=(type, id))),
            Route("GET", ("{type}", "{id}", "_history", "{vid}"), "vread", "instance", vread.vread),
        ]:
            self.table.add(route)

    @property
    def operations(self) -> OperationRegistry:
        return self.table.operations

    # -- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, req: FhirRequest, unit: Unit | None = None) -> FhirResponse:
        """Route ``req`` to its interaction, as ``req.actor``. With ``unit`` the interaction joins that
        unit of work (the entries of a transaction Bundle or a message); without, it runs in a store
        transaction of its own."""
        method = "GET" if req.method == "HEAD" else req.method
        path = req.path.strip("/")
        segments = tuple(path.split("/")) if path else ()
        if "" in segments:  # Patient//_history is not the type's history
            raise invalid(f"The path /{req.path} has an empty segment", code="not-found")
        repo = Repository(self.services, req.actor, unit, req.trail)
        op = self._operation(method, segments, req)
        if op is not None:
            if unit is not None:
                # A 400, not a 501: the same operation works outside the Bundle, so the request is what
                # the client must change (and no client input may answer 5xx).
                raise FhirError(Category.INVALID, "Operations are not supported inside a transaction Bundle: "
                                "send them as requests of their own or in a batch", code="not-supported")
            return await op(repo, req)
        allowed: set[str] = set()
        candidates = [(r, p) for r in self._routes(len(segments)) if (p := match(r.pattern, segments)) is not None]
        # A literal path ("metadata", "_history") is never read as a type or id of another route.
        literal = [(r, p) for r, p in candidates if not p]
        for route, params in literal or candidates:
            if route.method != method:
                allowed.add(route.method)
                continue
            type = params.get("ctype") or params.get("type")
            req.trail.route(route.interaction, type, params.get("id") if "ctype" not in params else None)
            permission = _PERMISSIONS.get(route.interaction)
            if permission is not None:
                check_scope(req.actor, type, permission)
            resp = await route.handler(repo, req, **params)
            return self._subset(req, resp) if route.interaction in ("read", "vread") else resp
        is_type = self.services.definitions.is_resource_type
        if allowed and not literal and not is_type(segments[0]):
            # POST Unicorn/1: an unknown type is a 404 whatever the method (http.html, as HAPI FHIR answers).
            raise FhirError(Category.NOT_FOUND, f"Unknown resource type '{segments[0]}'", code="not-supported")
        if allowed:
            raise FhirError(Category.NOT_ALLOWED, f"Method {req.method} is not allowed on /{req.path}",
                            headers={"Allow": ", ".join(sorted(allowed))})
        if segments and not is_type(segments[0]):
            raise FhirError(Category.NOT_FOUND, f"Unknown resource type '{segments[0]}'", code="not-supported")
        raise not_found(f"No FHIR interaction at /{req.path}")

    def _routes(self, length: int) -> list[Route]:
        """The routes whose pattern has ``length`` segments, in table order: matching all of them cost a
        read by id a tenth of its time (issue 19). Rebuilt when routes were added since."""
        count, index = self._by_length
        if count != len(self.table.routes):
            index = {}
            for route in self.table.routes:
                index.setdefault(len(route.pattern), []).append(route)
            self._by_length = (len(self.table.routes), index)
        return index.get(length, [])

    def _operation(self, method: str, segments: tuple[str, ...], req: FhirRequest
                   ) -> Callable[[Repository, FhirRequest], Awaitable[FhirResponse]] | None:
        if not segments or not segments[-1].startswith("$"):
            return None
        name = segments[-1][1:]
        op = self.table.operations.get(name)
        level = {1: "system", 2: "type", 3: "instance"}.get(len(segments))
        if op is None or level is None:
            raise FhirError(Category.NOT_FOUND, f"Unknown operation ${name} at this level", code="not-supported")
        if level != "system" and not self.services.definitions.is_resource_type(segments[0]):
            raise FhirError(Category.NOT_FOUND, f"Unknown resource type '{segments[0]}'", code="not-supported")
        if not getattr(op, level) or (op.resource_types and level != "system"
                                      and segments[0] not in op.resource_types):
            raise FhirError(Category.NOT_FOUND, f"Operation ${name} is not defined at /{'/'.join(segments)}",
                            code="not-supported")
        if method not in op.methods:
            raise FhirError(Category.NOT_ALLOWED, f"Operation ${name} does not accept {method}",
                            headers={"Allow": ", ".join(op.methods)})
        type_ = segments[0] if len(segments) >= 2 else None
        id_ = segments[1] if len(segments) == 3 else None
        req.trail.route("operation", type_, id_)
        if op.admin and not (req.actor.system or req.actor.admin):
            raise FhirError(Category.FORBIDDEN, f"${name} needs an admin client", code="forbidden")
        if op.permission is not None:
            check_scope(req.actor, type_ or op.scope_type, op.permission)

        async def run(repo: Repository, req: FhirRequest) -> FhirResponse:
            return await op.handler(repo, req, type_, id_)

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

    async def _capabilities(self, repo: Repository, req: FhirRequest) -> FhirResponse:
        return FhirResponse(200, body=self._statement.get(self.services, self.table, req.base_url))
