"""vread: https://hl7.org/fhir/R4/http.html#vread

``GET [base]/[type]/[id]/_history/[vid]``. The version that records a deletion answers 410.
"""

from __future__ import annotations

from fhir_exchange.errors import gone, not_found
from fhir_exchange.interactions.common import check_id, check_type, parse_version_id, version_response
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse


async def vread(repo: Repository, req: FhirRequest, type: str, id: str, vid: str) -> FhirResponse:
    check_type(repo.svc, type)
    check_id(id)
    v, known = await repo.vread(type, id, parse_version_id(vid))
    if v is None:
        if not known:
            raise not_found(f"Resource {type}/{id} is not known")
        raise not_found(f"Resource {type}/{id} has no version {vid}")
    if v.deleted:
        raise gone(f"Version {vid} of {type}/{id} records its deletion")
    return version_response(req, v)
