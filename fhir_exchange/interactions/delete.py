"""delete: https://hl7.org/fhir/R4/http.html#delete

Logical delete: a new version marks the resource deleted; read then answers 410 and vread of earlier
versions still works. Deleting a deleted one changes nothing (200). Deleting an unknown resource is
also a 200 with an informational OperationOutcome and writes nothing: http.html#delete says "Upon
successful deletion, or if the resource does not exist at all, the server should return either a 200
OK ...", and HAPI FHIR does the same (hapi-fhir#3283).
Conditional delete ``DELETE [base]/[type]?criteria`` deletes the single match; several
matches answer 412 (single-delete behaviour, http.html#3.1.0.7.1).
"""

from __future__ import annotations

import orjson

from fhir_exchange.clock import instant
from fhir_exchange.definitions.definitions import CONFORMANCE_TYPES
from fhir_exchange.errors import Issue, operation_outcome, precondition_failed
from fhir_exchange.interactions.common import check_id, check_type, etag, parse_if_match
from fhir_exchange.interactions.conditional import matches
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.unit import UnitContext, notify, unit
from fhir_exchange.store.port import ResourceVersion, UnitOfWork


async def delete_in(svc: Services, u: UnitContext, req: FhirRequest, type: str, id: str) -> FhirResponse:
    uow = u.uow
    current = await uow.read(type, id)
    if current is None:
        return FhirResponse(200, resource=operation_outcome(
            [Issue("information", "not-found", f"Resource {type}/{id} does not exist: nothing deleted")]))
    if current.deleted:
        return _ok(f"{type}/{id} was already deleted", current.version_id)
    if_match = parse_if_match(req)
    if if_match is not None and if_match != current.version_id:
        raise precondition_failed(
            f"If-Match W/\"{if_match}\" does not match the current version {current.version_id} of {type}/{id}"
        )
    now = max(instant(svc.clock.now()), current.last_updated)
    v = ResourceVersion(type, id, current.version_id + 1, now, True, b"", "DELETE")
    await uow.delete(v, expected_version=current.version_id)
    if type in CONFORMANCE_TYPES:
        notify(svc, u, orjson.loads(current.body), deleted=True)
    return _ok(f"Deleted {type}/{id}", v.version_id)




def _ok(message: str, version_id: int) -> FhirResponse:
    resp = FhirResponse(200, resource=operation_outcome([Issue("information", "informational", message)]))
    resp.etag = etag(version_id)
    resp.headers["ETag"] = resp.etag
    return resp


async def delete(svc: Services, req: FhirRequest, type: str, id: str, ctx: UnitContext | None = None) -> FhirResponse:
    check_type(svc, type)
    check_id(id)
    async with unit(svc, ctx) as u:
        return await delete_in(svc, u, req, type, id)


async def conditional_target(svc: Services, uow: UnitOfWork, type: str, query: list[tuple[str, str]]) -> str | None:
    """The id a conditional delete removes (None: no match); several matches answer 412."""
    found = await matches(svc, uow, type, query)
    if len(found) > 1:
        raise precondition_failed(f"The criteria match more than one {type}: the delete is refused")
    return found[0].id if found else None


def nothing_matched(type: str) -> FhirResponse:
    return FhirResponse(200, resource=operation_outcome(
        [Issue("information", "not-found", f"No {type} matches the criteria: nothing deleted")]))


async def conditional_delete(svc: Services, req: FhirRequest, type: str,
                             ctx: UnitContext | None = None) -> FhirResponse:
    check_type(svc, type)
    async with unit(svc, ctx) as u:
        target = await conditional_target(svc, u.uow, type, req.query)
        if target is None:
            return nothing_matched(type)
        return await delete_in(svc, u, req, type, target)
