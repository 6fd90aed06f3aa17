"""create: https://hl7.org/fhir/R4/http.html#create

``POST [base]/[type]``. The server assigns the id (a client id in the body is ignored, as the spec
says). With ``If-None-Exist`` (http.html#ccreate): no match creates, one match returns it with 200
and creates nothing, several matches answer 412.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import Issue, precondition_failed
from fhir_exchange.interactions.common import (
    check_type,
    prefer_return,
    require_resource_body,
    validate,
    version_response,
    write_version,
)
from fhir_exchange.interactions.conditional import criteria_pairs, matches
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.unit import UnitContext, notify, unit
from fhir_exchange.store.port import NEW, ResourceVersion


async def create(svc: Services, req: FhirRequest, type: str, ctx: UnitContext | None = None) -> FhirResponse:
    check_type(svc, type)
    resource = dict(require_resource_body(req, type))
    resource.pop("id", None)
    issues = validate(svc, resource)
    condition = req.header("if-none-exist")
    pairs = criteria_pairs(condition) if condition else None
    async with unit(svc, ctx) as u:
        if pairs is not None:
            found = await matches(svc, u.uow, type, pairs)
            if len(found) > 1:
                raise precondition_failed(f"If-None-Exist '{condition}' matches more than one {type}")
            if found:
                return existing(req, found[0], issues)
        return await create_in(svc, u, req, type, svc.clock.new_id(), resource, issues)


def existing(req: FhirRequest, v: ResourceVersion, issues: list[Issue] | None = None) -> FhirResponse:
    """The answer of a conditional create that matched ``v``: 200, nothing created."""
    return prefer_return(req, version_response(req, v, 200, with_location=True), issues)


async def create_in(svc: Services, u: UnitContext, req: FhirRequest, type: str, id: str,
                    resource: dict[str, Any], issues: list[Issue]) -> FhirResponse:
    """Store a validated ``resource`` as the new ``type/id`` inside ``u`` (a transaction pre-assigns ids)."""
    v = await write_version(svc, u.uow, type, id, resource, expected_version=NEW, current=None, method="POST")
    notify(svc, u, resource | {"id": id}, deleted=False)
    return prefer_return(req, version_response(req, v, 201, with_location=True), issues)

