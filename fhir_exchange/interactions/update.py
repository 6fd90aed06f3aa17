"""update: https://hl7.org/fhir/R4/http.html#update

``PUT [base]/[type]/[id]``. Update as create is allowed: a PUT to an id that does not exist (or was
deleted) creates it with the client's id (201). ``If-Match`` (a weak ETag) pins the version
(412 on mismatch, http.html#concurrency); without it the update still cannot lose a concurrent write,
since the store checks the version read in the same unit of work. An update that changes nothing
answers the current version and writes none (as HAPI FHIR does).

Conditional update ``PUT [base]/[type]?criteria`` (http.html#cond-update): no match creates (with
the body's id if it has one), one match updates it, several answer 412.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import invalid, precondition_failed
from fhir_exchange.interactions.common import (
    check_id,
    check_type,
    parse_if_match,
    prefer_return,
    require_resource_body,
    version_response,
)
from fhir_exchange.interactions.repository import Draft, Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse


def check_body_id(resource: dict[str, Any], id: str) -> None:
    """An update's body must carry the URL's id (http.html#update)."""
    body_id = resource.get("id")
    if body_id is None:
        raise invalid("The resource has no id; an update needs the id of the URL in the body", "id")
    if body_id != id:
        raise invalid(f"The resource id '{body_id}' does not match the URL id '{id}'", "id")


async def put(w: Repository, req: FhirRequest, draft: Draft, id: str, *, location: bool = False) -> FhirResponse:
    """Write ``draft`` as ``type/id`` inside the unit of work of ``w`` and build the answer."""
    type = draft.type
    if_match = parse_if_match(req)
    current = await w.current(type, id)
    live = current is not None and not current.deleted
    if if_match is not None:
        if current is None or not live:
            raise precondition_failed(f"If-Match given but {type}/{id} does not exist")
        if current.version_id != if_match:
            raise precondition_failed(
                f"If-Match W/\"{if_match}\" does not match the current version {current.version_id} of {type}/{id}"
            )
    written = await w.write(draft, type, id, current=current, method="PUT")
    created = not live
    return prefer_return(req, version_response(req, written.version, 201 if created else 200,
                                               with_location=created or location), written.issues)


async def update(repo: Repository, req: FhirRequest, type: str, id: str) -> FhirResponse:
    check_type(repo.svc, type)
    check_id(id)
    resource = require_resource_body(req, type)
    check_body_id(resource, id)
    async with repo.unit() as w:
        return await put(w, req, w.prepare(type, resource), id)


async def conditional_update(repo: Repository, req: FhirRequest, type: str) -> FhirResponse:
    check_type(repo.svc, type)
    if not req.query:
        raise invalid("A conditional update needs search criteria")
    resource = require_resource_body(req, type)
    body_id = resource.get("id")
    if body_id is not None:
        check_id(body_id)
    async with repo.unit() as w:
        draft = w.prepare(type, resource)
        found = await w.match_one(type, req.query, "Conditional update refused")
        if found is not None:
            if body_id is not None and body_id != found.id:
                raise invalid(f"The resource id '{body_id}' differs from the matched resource {type}/{found.id}",
                              "id")
            target = found.id
        else:
            target = req.assigned_id or body_id or repo.svc.clock.new_id()
        draft = Draft(type, resource | {"id": target}, draft.issues)
        return await put(w, req, draft, target, location=True)
