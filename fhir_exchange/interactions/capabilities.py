"""capabilities: https://hl7.org/fhir/R4/http.html#capabilities

``GET [base]/metadata`` answers a CapabilityStatement generated from the route table (routes and
operations) and the loaded definitions, never from a hand-written list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_exchange import FHIR_VERSION, __version__
from fhir_exchange.clock import instant
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.routes import RouteTable
from fhir_exchange.interactions.search import declared_includes, declared_search_params
from fhir_exchange.interactions.services import Services

_PATCH_DOC = ("JSON Patch (application/json-patch+json) or FHIRPath Patch (a Parameters resource, "
              "application/fhir+json; https://hl7.org/fhir/R4/fhirpatch.html); in Bundles a Binary holding "
              "the JSON Patch or the Parameters resource")
# _list (search.html#list) at system level; each type declares it too (interactions/search.py).
_LIST_PARAM = {"name": "_list", "type": "special",
               "documentation": "Resources referenced by List/[id].entry.item (a List the caller may read)"}
# _filter (search_filter.html, fhir_exchange/search/filter.py) at system level and on every type.
_FILTER_PARAM = {"name": "_filter", "type": "special",
                 "documentation": "Boolean expression (and, or, not, parentheses; not > and > or) of comparisons "
                                  "eq ne co sw ew gt lt ge le sa eb ap pr (ss sb in ni on tokens, re on "
                                  "references), paths with chains; ANDed with the other parameters"}
_TYPE_ORDER = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
               "search-type"]


@dataclass(slots=True)
class StatementCache:
    """The last statement built, as bytes. It is ~1 MB for 146 types with their search parameters and
    takes ~100 ms to build, on the event loop: rebuilt only when what it is generated from changes."""

    key: tuple[Any, ...] | None = None
    body: bytes = b""

    def get(self, svc: Services, table: RouteTable, base_url: str) -> bytes:
        key = (svc.definitions.generation, base_url, table.fingerprint())
        if key != self.key:
            self.body = jsonio.dumps(capability_statement(svc, table, base_url))
            self.key = key
        return self.body


def security(svc: Services, base_url: str) -> dict[str, Any]:
    """``rest.security``: SMART Backend Services (and where to get a token), or that there is none."""
    cors = bool(svc.settings.cors_origins)
    if not svc.settings.auth:
        return {"cors": cors, "description": "Authentication is off: every caller acts as the system (development)."}
    return {
        "cors": cors,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}],
                     "text": "SMART Backend Services: OAuth 2.0 client credentials with a private_key_jwt assertion"}],
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": [{"url": "token", "valueUri": f"{base_url}/auth/token"}]}],
        "description": "Every request needs a bearer token (or a registered client certificate); an institution "
                       "sees what it owns, the shared directory and what a consent grants it.",
    }


def capability_statement(svc: Services, table: RouteTable, base_url: str) -> dict[str, Any]:
    type_interactions = table.interactions("type") | table.interactions("instance")
    type_codes = [c for c in _TYPE_ORDER if c in type_interactions]
    system_codes = sorted(table.interactions("system") - {"capabilities"})
    ops = list(table.operations.operations.values())
    resources = []
    for type in svc.definitions.resource_types():
        entry: dict[str, Any] = {
            "type": type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{type}",
            "interaction": [{"code": c, **({"documentation": _PATCH_DOC} if c == "patch" else {})} for c in type_codes],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "modified-since",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
        }
        params = [*declared_search_params(svc, type), _FILTER_PARAM]
        if params:
            entry["searchParam"] = params
        inc, rev = declared_includes(svc, type)
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
        "searchParam": [_LIST_PARAM, _FILTER_PARAM],
    }
    sys_ops = [o for o in ops if o.system]
    if sys_ops:
        rest["operation"] = [{"name": o.name, "definition": o.definition} for o in sys_ops]
    rest["security"] = security(svc, base_url)
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(svc.clock.now()),  # when this statement was generated (FHIR dateTime)
        "publisher": "fhir-exchange",
        "kind": "instance",
        "software": {"name": "fhir-exchange", "version": __version__},
        "implementation": {"description": "fhir-exchange FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json", "application/fhir+xml", "application/xml"],
        # JSON Patch; FHIRPath Patch (a Parameters body) in JSON or XML
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"],
        "rest": [rest],
    }
    if table.operations.get("export") is not None:  # the Bulk Data Access IG's server (interactions/export.py)
        statement["instantiates"] = ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]
    return statement
