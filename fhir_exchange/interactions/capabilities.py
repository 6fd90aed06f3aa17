"""capabilities: https://hl7.org/fhir/R4/http.html#capabilities

``GET [base]/metadata`` answers a CapabilityStatement generated from the router's route table, the
operation registry and the loaded definitions, never from a hand-written list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_exchange import FHIR_VERSION, __version__
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.request import FhirRequest

if TYPE_CHECKING:
    from fhir_exchange.interactions.router import Router

_TYPE_ORDER = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
               "search-type"]


@dataclass(slots=True)
class StatementCache:
    """The last statement built, as bytes. It is ~1 MB for 146 types with their search parameters and
    takes ~100 ms to build, on the event loop: rebuilt only when what it is generated from changes."""

    key: tuple[Any, ...] | None = None
    body: bytes = b""

    def get(self, router: Router, req: FhirRequest) -> bytes:
        key = (router.services.definitions.generation, req.base_url,
               tuple((r.method, r.pattern, r.interaction, r.level) for r in router.routes),
               tuple(sorted(router.operations.operations)), router.bundle_processor is not None)
        if key != self.key:
            self.body = jsonio.dumps(capability_statement(router, req))
            self.key = key
        return self.body


def search_params_for(router: Router, type: str) -> list[dict[str, Any]]:
    declare = getattr(router, "declared_search_params", None)
    if declare is not None:
        out: list[dict[str, Any]] = declare(type)
        return out
    return []


def capability_statement(router: Router, req: FhirRequest) -> dict[str, Any]:
    svc = router.services
    type_interactions = [r.interaction for r in router.routes if r.level in ("type", "instance")]
    type_codes = [c for c in _TYPE_ORDER if c in type_interactions]
    system_codes = sorted({r.interaction for r in router.routes
                           if r.level == "system" and r.interaction != "capabilities"
                           and (r.interaction not in ("batch", "transaction") or router.bundle_processor)})
    ops = list(router.operations.operations.values())
    resources = []
    for type in svc.definitions.resource_types():
        entry: dict[str, Any] = {
            "type": type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{type}",
            "interaction": [{"code": c} for c in type_codes],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "modified-since",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
        }
        params = search_params_for(router, type)
        if params:
            entry["searchParam"] = params
        includes = getattr(router, "declared_includes", None)
        if includes is not None:
            inc, rev = includes(type)
            if inc:
                entry["searchInclude"] = inc
            if rev:
                entry["searchRevInclude"] = rev
        type_ops = [o for o in ops if (o.type or o.instance) and (not o.resource_types or type in o.resource_types)]
        if type_ops:
            entry["operation"] = [{"name": o.name, "definition": o.definition} for o in type_ops]
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": c} for c in system_codes],
    }
    sys_ops = [o for o in ops if o.system]
    if sys_ops:
        rest["operation"] = [{"name": o.name, "definition": o.definition} for o in sys_ops]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "fhir-exchange",
        "kind": "instance",
        "software": {"name": "fhir-exchange", "version": __version__},
        "implementation": {"description": "fhir-exchange FHIR R4 server", "url": req.base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }
