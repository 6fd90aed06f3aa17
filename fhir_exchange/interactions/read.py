"""read: https://hl7.org/fhir/R4/http.html#read

``GET [base]/[type]/[id]``. A deleted resource answers 410 Gone, an unknown one 404 (and so does one
the actor may not see: 404, not 403, for what the caller may not know exists). With
``If-None-Match`` naming the current version the answer is 304 (http.html#cread).
"""

from __future__ import annotations

import re

from fhir_exchange.errors import gone, not_found
from fhir_exchange.interactions.common import check_id, check_type, version_response
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.store.port import ResourceVersion


async def current_version(repo: Repository, type: str, id: str) -> ResourceVersion:
    """The live current version the actor may see (404 unknown or not visible, 410 deleted)."""
    check_type(repo.svc, type)
    check_id(id)
    # Inside a transaction Bundle, the repository reads what its earlier entries wrote.
    v = await repo.access(type, id)
    if v is None:
        raise not_found(f"Resource {type}/{id} is not known")
    if v.deleted:
        raise gone(f"Resource {type}/{id} was deleted (version {v.version_id})")
    return v


async def read(repo: Repository, req: FhirRequest, type: str, id: str) -> FhirResponse:
    v = await current_version(repo, type, id)
    inm = req.header("if-none-match")
    if inm:
        tags = {m for m in re.findall(r'"([^"]*)"', inm)}
        if str(v.version_id) in tags or inm.strip() == "*":
            resp = version_response(req, v, 304)
            resp.body = None
            return resp
    ims = req.header("if-modified-since")
    if ims:
        from email.utils import parsedate_to_datetime

        from fhir_exchange.interactions.common import http_date

        try:
            if parsedate_to_datetime(http_date(v.last_updated)) <= parsedate_to_datetime(ims):
                resp = version_response(req, v, 304)
                resp.body = None
                return resp
        except (TypeError, ValueError):
            pass  # an unparseable date is ignored, as RFC 9110 says
    return version_response(req, v)
