"""Whether one change is news for one Subscription, and what the subscriber may be told of it.

The change's version is matched against the criteria (a plain R4 search URL, or a consult topic with
its ``backport-filter-criteria``) with the in-memory matcher; then it is read AGAIN, through the router,
as the Subscription's owner (its institution, the client that wrote it and that client's scopes), so
that isolation, scopes and consent grants decide exactly as they would for a read by the subscriber: a
403 or 404 means the subscriber is not told. Deletions notify nothing (the R4 criteria are applied to
the new content of a resource).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.interactions.router import Router
from fhir_exchange.notify.criteria import Evaluator, parse_criteria
from fhir_exchange.notify.subscription import Spec
from fhir_exchange.notify.topics import TOPICS, Topic
from fhir_exchange.search.query import SearchQuery
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.registry import Registry
from fhir_exchange.store.port import ChangeRecord, ResourceVersion

CLIENT_TAG = "http://fhir-exchange.org/fhir/CodeSystem/subscription-client"
"""The meta.tag system under which the server records the client that wrote a Subscription."""


@dataclass(frozen=True, slots=True)
class Compiled:
    spec: Spec
    topic: Topic | None
    queries: tuple[SearchQuery, ...]  # all must match (a topic's own search and its filters)

    @property
    def type(self) -> str:
        return self.queries[0].type or ""  # criteria always name their type (parse_criteria)


def writer(resource: dict[str, Any]) -> str | None:
    for tag in (resource.get("meta") or {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == CLIENT_TAG and tag.get("code"):
            return str(tag["code"])
    return None


def compile_spec(router: Router, spec: Spec, institution: str | None) -> Compiled:
    defs = router.services.definitions
    topic = TOPICS.get(spec.criteria) if spec.topic else None
    if topic is None:
        return Compiled(spec, None, (parse_criteria(defs, spec.criteria),))
    queries = [parse_criteria(defs, topic.search(institution))]
    queries += [parse_criteria(defs, f) for f in spec.filters]
    return Compiled(spec, topic, tuple(queries))


class Judge:
    def __init__(self, router: Router, registry: Registry | None, base_url: str) -> None:
        self.router = router
        self.registry = registry
        self.base_url = base_url
        self.evaluator = Evaluator(router.services.definitions)

    async def owner(self, subscription: ResourceVersion, resource: dict[str, Any]) -> Actor | None:
        """The actor the subscriber's notifications are judged as; None when its client may no longer act."""
        if not self.router.services.settings.auth:
            return SYSTEM
        client_id = writer(resource)
        if subscription.owner is None:
            return SYSTEM  # written by the server itself
        if self.registry is None or client_id is None:
            return None
        client = await self.registry.client(client_id, instant(self.router.services.clock.now()))
        if client is None or client.disabled or client.institution != subscription.owner:
            return None
        return Actor(institution=subscription.owner, client_id=client.client_id, scopes=frozenset(client.scopes),
                     admin=client.admin)

    async def news(self, compiled: Compiled, actor: Actor, change: ChangeRecord
                   ) -> tuple[dict[str, Any], ResourceVersion] | None:
        """The changed resource as the subscriber may read it, and its stored version, when the change is
        news for it."""
        if change.deleted or change.type != compiled.type:
            return None
        store = self.router.services.store
        version = await store.vread(change.type, change.id, change.version_id)
        if version is None or version.deleted:
            return None
        resource: dict[str, Any] = jsonio.loads(version.body)
        if compiled.topic is not None:
            previous = None
            if change.version_id > 1:
                before = await store.vread(change.type, change.id, change.version_id - 1)
                if before is not None and not before.deleted:
                    previous = jsonio.loads(before.body)
            if not compiled.topic.triggered(version.method, resource, previous):
                return None
        self.evaluator.load(resource)
        if not all(self.evaluator.matches(q) for q in compiled.queries):
            return None
        try:
            resp = await self.router.dispatch(FhirRequest(
                "GET", f"{change.type}/{change.id}/_history/{change.version_id}", base_url=self.base_url, actor=actor))
        except FhirError:
            return None  # not the subscriber's to see
        seen = resp.json()
        return (seen, version) if seen is not None else None
