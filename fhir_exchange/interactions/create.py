"""create: https://hl7.org/fhir/R4/http.html#create

``POST [base]/[type]``. The server assigns the id (a client id in the body is ignored, as the spec
says; a transaction's plan may have assigned it already, :attr:`FhirRequest.assigned_id`). With
``If-None-Exist`` (http.html#ccreate): no match creates, one match returns it with 200 and creates
nothing, several matches answer 412.
"""

from __future__ import annotations

from collections.abc import Sequence

from fhir_exchange.errors import Issue
from fhir_exchange.interactions.common import check_type, prefer_return, require_resource_body, version_response
from fhir_exchange.interactions.repository import Repository, criteria_pairs
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.store.port import ResourceVersion


async def create(repo: Repository, req: FhirRequest, type: str) -> FhirResponse:
    check_type(repo.svc, type)
    resource = dict(require_resource_body(req, type))
    resource.pop("id", None)
    condition = req.header("if-none-exist")
    pairs = criteria_pairs(condition) if condition else None
    async with repo.unit() as w:
        draft = w.prepare(type, resource)
        if pairs is not None:
            found = await w.match_one(type, pairs, f"If-None-Exist '{condition}'")
            if found is not None:
                return existing(req, found, draft.issues)
        written = await w.write(draft, type, req.assigned_id or repo.svc.clock.new_id(), current=None,
                                method="POST")
    return prefer_return(req, version_response(req, written.version, 201, with_location=True), written.issues)


def existing(req: FhirRequest, v: ResourceVersion, issues: Sequence[Issue] = ()) -> FhirResponse:
    """The answer of a conditional create that matched ``v``: 200, nothing created."""
    return prefer_return(req, version_response(req, v, 200, with_location=True), issues)
