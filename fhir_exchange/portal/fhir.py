"""The portal as a client of the one request path.

A :class:`Fhir` is made per page view with the signed-in user's :class:`Actor` and the page's
:class:`AuditTrail`; every read, search and write of the page is a :class:`FhirRequest` given to
:meth:`Router.dispatch`, exactly as an API client's request is, so isolation, consent-based grants,
the consult workflow's rules and the audit apply. It never touches the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.audit import AuditTrail

PAGE = 200  # matches asked per search page
LIMIT = 1000  # matches a page view reads at most from one search


@dataclass(slots=True)
class SearchResult:
    matches: list[dict[str, Any]]
    included: dict[str, dict[str, Any]]  # "Type/id" -> resource
    more: bool = False  # the limit cut the result


@dataclass(slots=True)
class Fhir:
    router: Router
    actor: Actor
    base_url: str
    trail: AuditTrail = field(default_factory=AuditTrail)
    cache: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    async def call(self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None,
                   headers: dict[str, str] | None = None) -> FhirResponse:
        req = FhirRequest(method, path, query or [], headers or {}, body, self.base_url, self.actor, self.trail)
        return await self.router.dispatch(req)

    async def read(self, ref: str | None) -> dict[str, Any] | None:
        """The resource ``Type/id`` as the user may see it; None when absent or not visible (a 404)."""
        if not ref or ref.count("/") != 1:
            return None
        if ref not in self.cache:
            try:
                self.cache[ref] = (await self.call("GET", ref)).json()
            except FhirError as err:
                if err.status not in (404, 410):
                    raise
                self.cache[ref] = None
        return self.cache[ref]

    async def search(self, type: str, params: list[tuple[str, str]], *, limit: int = LIMIT) -> SearchResult:
        """Every match up to ``limit`` (page by page), with what ``_include`` brought."""
        matches: list[dict[str, Any]] = []
        included: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            count = min(PAGE, limit - len(matches))
            query = [*params, ("_count", str(count)), ("_offset", str(offset)), ("_total", "none")]
            bundle = (await self.call("GET", type, query)).json() or {}
            entries = bundle.get("entry") or []
            page = 0
            for entry in entries:
                resource = entry.get("resource") or {}
                if (entry.get("search") or {}).get("mode") == "include":
                    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
                    included[ref] = resource
                    self.cache.setdefault(ref, resource)
                else:
                    matches.append(resource)
                    page += 1
            more = any(link.get("relation") == "next" for link in bundle.get("link") or [])
            if not more or page == 0:
                return SearchResult(matches, included)
            if len(matches) >= limit:
                return SearchResult(matches, included, more=True)
            offset += page

    async def history(self, ref: str) -> list[dict[str, Any]]:
        """The versions of ``Type/id``, oldest first (deleted versions left out)."""
        bundle = (await self.call("GET", f"{ref}/_history", [("_count", "200")])).json() or {}
        versions = [e["resource"] for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)]
        return sorted(versions, key=lambda r: int((r.get("meta") or {}).get("versionId") or 0))

    async def put(self, resource: dict[str, Any], *, version: str | None = None) -> dict[str, Any]:
        headers = {"if-match": f'W/"{version}"'} if version else {}
        ref = f"{resource['resourceType']}/{resource['id']}"
        written = (await self.call("PUT", ref, body=resource, headers=headers)).json() or {}
        self.cache[ref] = written
        return written

    async def transaction(self, *writes: tuple[dict[str, Any], str | None]) -> None:
        """Write resources (each with the version it must still be at, or None) all or nothing."""
        entries = []
        for resource, version in writes:
            ref = f"{resource['resourceType']}/{resource['id']}"
            request: dict[str, Any] = {"method": "PUT", "url": ref}
            if version:
                request["ifMatch"] = f'W/"{version}"'
            entries.append({"fullUrl": f"{self.base_url}/{ref}", "resource": resource, "request": request})
            self.cache.pop(ref, None)
        await self.call("POST", "", body={"resourceType": "Bundle", "type": "transaction", "entry": entries})


def version_of(resource: dict[str, Any] | None) -> str | None:
    return str((resource or {}).get("meta", {}).get("versionId") or "") or None
