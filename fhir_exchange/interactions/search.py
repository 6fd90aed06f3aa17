"""search: https://hl7.org/fhir/R4/http.html#search and https://hl7.org/fhir/R4/search.html

``GET [base]/[type]?...``, ``POST [base]/[type]/_search``, system search ``GET [base]?...`` and
compartment search ``GET [base]/Patient/[id]/[type]?...`` (search.html#compartments). Returns a
searchset Bundle spliced from stored bytes: matches with ``search.mode = match``, ``_include`` /
``_revinclude`` results with ``search.mode = include`` (search.html#include), ``total`` per ``_total``
(always counted unless ``none``: an exact count is cheap on the embedded store), and offset paging links
(http.html#paging) built only from the parameters actually applied, so unknown parameters ignored
in lenient mode do not appear in the self link. Offset links stay valid across restarts because the
order (rid, or the ``_sort`` keys with rid as tie-break) is stable.
``_summary``/``_elements`` subset the entries and mark them SUBSETTED.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.bundle_json import splice_bundle
from fhir_exchange.interactions.common import check_id, check_type
from fhir_exchange.interactions.paging import page_links
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.subsetting import SummaryElements, apply
from fhir_exchange.search import includes
from fhir_exchange.search.params import reference
from fhir_exchange.search.parse import parse
from fhir_exchange.store.port import ResourceVersion


def _entry_body(v: ResourceVersion, summaries: SummaryElements | None, summary: str | None,
                elements: tuple[str, ...]) -> bytes:
    if (summary and summary != "false") or elements:
        assert summaries is not None
        return jsonio.dumps(apply(summaries, jsonio.loads(v.body), summary, list(elements) or None))
    return v.body


async def search(repo: Repository, req: FhirRequest, type: str | None = None,
                 summaries: SummaryElements | None = None,
                 compartment: tuple[str, str] | None = None) -> FhirResponse:
    # Inside a transaction Bundle, the repository's search sees what its earlier entries wrote.
    svc = repo.svc
    if type is not None:
        check_type(svc, type)
    if compartment is not None:
        check_type(svc, compartment[0])
        check_id(compartment[1])
    strict = req.prefer.get("handling") == "strict"
    lenient = req.prefer.get("handling") == "lenient"  # only asked for: drops a _filter naming unknown parameters
    query = parse(svc.definitions, type, req.query, default_count=svc.settings.default_count,
                  max_count=svc.settings.max_count, strict=strict, compartment=compartment, lenient=lenient)
    # References given as absolute URLs on the base this request used match as Type/id too (the
    # configured bases are added by the repository, for every search).
    query = reference.localise_query(query, (req.base_url,) if req.base_url else ())
    if query.summary == "count":
        result = await repo.search(replace(query, count=0, include=(), revinclude=(), sort=(),
                                            total="accurate"))
        head: dict[str, Any] = {"resourceType": "Bundle", "id": svc.clock.new_id(), "type": "searchset",
                                "total": result.total}
        return FhirResponse(200, resource=head)
    stopped: list[int] = []
    token = includes.STOPPED.set(stopped)
    try:
        result = await repo.search(query)
    finally:
        includes.STOPPED.reset(token)
    entries: list[tuple[dict[str, Any], bytes | None]] = []
    for v in result.matches:
        entries.append(({"fullUrl": f"{req.base_url}/{v.type}/{v.id}", "search": {"mode": "match"}},
                        _entry_body(v, summaries, query.summary, query.elements)))
    for v in result.includes:
        entries.append(({"fullUrl": f"{req.base_url}/{v.type}/{v.id}", "search": {"mode": "include"}},
                        _entry_body(v, summaries, query.summary, ())))
    if stopped:
        entries.append(({"search": {"mode": "outcome"}}, jsonio.dumps(iteration_stopped())))
    if compartment is not None:
        base = f"{req.base_url}/{compartment[0]}/{compartment[1]}/{type}"
    else:
        base = f"{req.base_url}/{type}" if type else req.base_url
    head = {"resourceType": "Bundle", "id": svc.clock.new_id(), "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head["link"] = page_links(base, list(query.link_params), query.offset, query.count, result.total,
                              len(result.matches))
    return FhirResponse(200, body=splice_bundle(head, entries))


def iteration_stopped() -> dict[str, Any]:
    """The warning of a search whose ``:iterate`` includes reached the depth limit with more to follow
    (search.html#include: a server may limit iteration; search.mode = outcome says it did)."""
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "warning", "code": "incomplete",
        "diagnostics": f"_include:iterate / _revinclude:iterate stopped after {includes.MAX_ITERATIONS} "
                       "iterations: resources referenced further along the chain are not included"}]}


# -- what the CapabilityStatement declares (capabilities.py reads these through the router) --------

_MODIFIERS_DOC = {
    "string": ":exact, :contains, :missing",
    "token": ":text, :not, :in, :not-in, :above, :below, :missing"
             " (:of-type on Identifier parameters)",
    "reference": ":[type], :identifier, :missing; chaining (any depth)",
    "date": ":missing; prefixes eq ne gt lt ge le sa eb ap",
    "number": ":missing; prefixes eq ne gt lt ge le sa eb ap",
    "quantity": ":missing; prefixes eq ne gt lt ge le sa eb ap; value|system|code, value||unit",
    "uri": ":above, :below, :missing",
    "composite": "components separated by $",
    "special": ":missing; near=latitude|longitude|distance|units (km default, m, [mi_i]; 50 km default)",
}


def declared_search_params(svc: Services, type: str) -> list[dict[str, Any]]:
    """Exactly the parameters this server indexes for ``type`` (search.html#standard), with the
    modifiers it supports in ``documentation`` (R4 CapabilityStatement has no element for them)."""
    from fhir_exchange.search import registry

    out: list[dict[str, Any]] = []
    for sp in registry.params_for(svc.definitions, type).values():
        out.append({"name": sp.code, "definition": sp.url, "type": sp.type,
                    "documentation": f"Modifiers: {_MODIFIERS_DOC[sp.type]}"})
    out.append({"name": "_has", "type": "special",
                "documentation": "Reverse chaining: _has:Type:reference:parameter, nestable"})
    out.append({"name": "_list", "type": "special",
                "documentation": "Resources referenced by List/[id].entry.item (a List the caller may read)"})
    return out


def declared_includes(svc: Services, type: str) -> tuple[list[str], list[str]]:
    """(searchInclude, searchRevInclude) of ``type``: every reference parameter, plus ``*``."""
    from fhir_exchange.search import registry

    defs = svc.definitions
    inc = [f"{type}:{code}" for code, sp in registry.params_for(defs, type).items() if sp.type == "reference"]
    rev: list[str] = []
    for src in defs.resource_types():
        for code, sp in registry.params_for(defs, src).items():
            if sp.type == "reference" and (not sp.targets or type in sp.targets):
                rev.append(f"{src}:{code}")
    return (["*", *inc] if inc else []), rev


# -- $reindex --------------------------------------------------------------------------------------


async def reindex_operation(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    """``POST [base]/$reindex`` and ``POST [base]/[type]/$reindex``: re-extract the search index of the
    current resources, so that SearchParameters written to the server apply to existing data (as
    HAPI FHIR's ``$reindex``)."""
    n = await repo.svc.store.reindex(type)
    return FhirResponse(200, resource={
        "resourceType": "Parameters",
        "parameter": [{"name": "count", "valueInteger": n}],
    })


def register_operations(registry: Any) -> None:
    from fhir_exchange.interactions.operations import Operation

    registry.register(Operation("reindex", reindex_operation,
                                "urn:fhir-exchange:OperationDefinition/reindex",
                                system=True, type=True, affects_state=True, methods=("POST",), admin=True))
