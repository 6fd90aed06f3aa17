"""delete: https://hl7.org/fhir/R4/http.html#delete

Logical delete: a new version marks the resource deleted; read then answers 410 and vread of earlier
versions still works. Deleting a deleted one changes nothing (200). Deleting an unknown resource is
also a 200 with an informational OperationOutcome and writes nothing: http.html#delete says "Upon
successful deletion, or if the resource does not exist at all, the server should return either a 200
OK ...", and HAPI FHIR does the same (hapi-fhir#3283). A delete goes through the repository's write
path like every other write (guards, hooks, the change feed).
Conditional delete ``DELETE [base]/[type]?criteria`` deletes the single match; several
matches answer 412 (single-delete behaviour, http.html#3.1.0.7.1).
"""

from __future__ import annotations

from fhir_exchange.errors import Issue, operation_outcome, precondition_failed
from fhir_exchange.interactions.common import check_id, check_type, etag, parse_if_match
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse


async def _delete(w: Repository, req: FhirRequest, type: str, id: str) -> FhirResponse:
    current = await w.current(type, id)
    if current is None or not await w.visible(current):
        return FhirResponse(200, resource=operation_outcome(
            [Issue("information", "not-found", f"Resource {type}/{id} does not exist: nothing deleted")]))
    if current.deleted:
        return _ok(f"{type}/{id} was already deleted", current.version_id)
    if_match = parse_if_match(req)
    if if_match is not None and if_match != current.version_id:
        raise precondition_failed(
            f"If-Match W/\"{if_match}\" does not match the current version {current.version_id} of {type}/{id}"
        )
    written = await w.write(None, type, id, current=current, method="DELETE")
    return _ok(f"Deleted {type}/{id}", written.version.version_id)


def _ok(message: str, version_id: int) -> FhirResponse:
    return FhirResponse(200, resource=operation_outcome([Issue("information", "informational", message)]),
                        etag=etag(version_id))


async def delete(repo: Repository, req: FhirRequest, type: str, id: str) -> FhirResponse:
    check_type(repo.svc, type)
    check_id(id)
    async with repo.unit() as w:
        return await _delete(w, req, type, id)


async def conditional_delete(repo: Repository, req: FhirRequest, type: str) -> FhirResponse:
    check_type(repo.svc, type)
    async with repo.unit() as w:
        found = await w.match_one(type, req.query, "Conditional delete refused")
        if found is None:
            return FhirResponse(200, resource=operation_outcome(
                [Issue("information", "not-found", f"No {type} matches the criteria: nothing deleted")]))
        return await _delete(w, req, type, found.id)
