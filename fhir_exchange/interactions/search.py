"""search: https://hl7.org/fhir/R4/http.html#search and https://hl7.org/fhir/R4/search.html

``GET [base]/[type]?...``, ``POST [base]/[type]/_search`` and system search ``GET [base]?...``.
Returns a searchset Bundle spliced from stored bytes; ``_summary``/``_elements`` subset the entries.
"""

from __future__ import annotations

import orjson

from fhir_exchange.fhir.subsetting import SummaryElements, apply
from fhir_exchange.interactions.bundle_json import splice_bundle
from fhir_exchange.interactions.common import check_type
from fhir_exchange.interactions.paging import page_links
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.unit import UnitContext
from fhir_exchange.search.parse import parse

_PAGING = frozenset({"_count", "_offset", "_format", "_pretty"})


async def search(svc: Services, req: FhirRequest, type: str | None = None,
                 summaries: SummaryElements | None = None, ctx: UnitContext | None = None) -> FhirResponse:
    # Inside a transaction Bundle, search sees what its earlier entries wrote.
    store = ctx.uow if ctx is not None else svc.store
    if type is not None:
        check_type(svc, type)
    strict = req.prefer.get("handling") == "strict"
    query = parse(svc.definitions, type, req.query, default_count=svc.settings.default_count,
                  max_count=svc.settings.max_count, strict=strict)
    summary = req.query_value("_summary")
    if summary == "count":
        from dataclasses import replace

        result = await store.search(replace(query, count=0))
        head = {"resourceType": "Bundle", "type": "searchset", "total": result.total}
        return FhirResponse(200, resource=head)
    result = await store.search(query)
    elements = req.query_value("_elements")
    entries = []
    for v in result.matches:
        body: bytes | None = v.body
        if (summary and summary != "false") or elements:
            assert summaries is not None
            body = orjson.dumps(apply(summaries, orjson.loads(v.body), summary,
                                      elements.split(",") if elements else None))
        entries.append(({"fullUrl": f"{req.base_url}/{v.type}/{v.id}", "search": {"mode": "match"}}, body))
    params = [(k, v) for k, v in req.query if k not in _PAGING]
    base = f"{req.base_url}/{type}" if type else req.base_url
    head = {"resourceType": "Bundle", "id": svc.clock.new_id(), "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head["link"] = page_links(base, params, query.offset, query.count, result.total, len(result.matches))
    return FhirResponse(200, body=splice_bundle(head, entries))
