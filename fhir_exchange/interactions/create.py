"""create: https://hl7.org/fhir/R4/http.html#create

``POST [base]/[type]``. The server assigns the id (a client id in the body is ignored, as the spec
says). With ``If-None-Exist`` (http.html#ccreate): no match creates, one match returns it with 200
and creates nothing, several matches answer 412.
"""

from __future__ import annotations

from fhir_exchange.errors import precondition_failed
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
from fhir_exchange.store.port import NEW


async def create(svc: Services, req: FhirRequest, type: str) -> FhirResponse:
    check_type(svc, type)
    resource = dict(require_resource_body(req, type))
    resource.pop("id", None)
    issues = validate(svc, resource)
    condition = req.header("if-none-exist")
    pairs = criteria_pairs(condition) if condition else None
    async with svc.store.transaction() as uow:
        if pairs is not None:
            found = await matches(svc, uow, type, pairs)
            if len(found) > 1:
                raise precondition_failed(f"If-None-Exist '{condition}' matches more than one {type}")
            if found:
                return prefer_return(req, version_response(req, found[0], 200, with_location=True), issues)
        v = await write_version(svc, uow, type, svc.clock.new_id(), resource, expected_version=NEW,
                                current=None, method="POST")
    svc_notify(svc, resource | {"id": v.id}, deleted=False)
    return prefer_return(req, version_response(req, v, 201, with_location=True), issues)


def svc_notify(svc: Services, resource: dict[str, object], *, deleted: bool) -> None:
    """Tell listeners (definitions, search parameters) that a conformance resource changed."""
    for hook in svc.on_conformance_change:
        hook(resource, deleted)  # type: ignore[arg-type]
