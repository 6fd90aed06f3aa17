"""The route table: what the server answers, as one value that the router dispatches on and the
CapabilityStatement is generated from (neither knows the other)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.interactions.operations import OperationRegistry
from fhir_exchange.interactions.request import FhirResponse

Handler = Callable[..., Awaitable[FhirResponse]]
"""``handler(repo, req, **path_params)``: path parameters as named in the route's pattern."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: tuple[str, ...]  # literal segments, or {type} {id} {vid} {ctype}
    interaction: str  # CapabilityStatement interaction code
    level: str  # system | type | instance
    handler: Handler


@dataclass(slots=True)
class RouteTable:
    routes: list[Route] = field(default_factory=list)
    operations: OperationRegistry = field(default_factory=OperationRegistry)

    def add(self, route: Route) -> None:
        self.routes.append(route)

    def interactions(self, level: str) -> set[str]:
        return {r.interaction for r in self.routes if r.level == level}

    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever what the table declares changes (the CapabilityStatement cache key)."""
        return (tuple((r.method, r.pattern, r.interaction, r.level) for r in self.routes),
                tuple(sorted(self.operations.operations)))


def match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
    """The path parameters of ``segments`` under ``pattern``, or None when it does not fit."""
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for p, s in zip(pattern, segments, strict=True):
        if p.startswith("{"):
            if not s or (s.startswith(("_", "$")) and p != "{vid}"):
                return None
            params[p[1:-1]] = s
        elif p != s:
            return None
    return params
