"""update: https://hl7.org/fhir/R4/http.html#update

``PUT [base]/[type]/[id]``: the body's id must equal the URL's (else 400). Update-as-create with a
client-chosen id answers 201, as HAPI FHIR and Firely Server allow. ``If-Match`` pins the version
(412 on mismatch, http.html#concurrency); without it the update still cannot lose a concurrent write,
since the store checks the version read in the same unit of work.

Conditional update ``PUT [base]/[type]?criteria`` (http.html#cond-update): no match creates (with
the body's id if it has one), one match updates it, several answer 412.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import Issue, invalid, precondition_failed
from fhir_exchange.interactions.common import (
    check_id,
    check_type,
    parse_if_match,
    prefer_return,
    require_resource_body,
    validate,
    version_response,
    write_version,
)
from fhir_exchange.interactions.conditional import matches
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.unit import UnitContext, notify, unit
from fhir_exchange.store.port import NEW, ResourceVersion, UnitOfWork


async def put_resource(
    svc: Services, uow: UnitOfWork, req: FhirRequest, type: str, id: str, resource: dict[str, Any],
    *, method: str = "PUT",
) -> tuple[ResourceVersion, bool]:
    """Write ``resource`` as ``type/id`` inside ``uow``; returns (version, created)."""
    if_match = parse_if_match(req)
    current = await uow.read(type, id)
    live = current is not None and not current.deleted
    if if_match is not None:
        if not live:
            raise precondition_failed(f"If-Match given but {type}/{id} does not exist")
        assert current is not None
        if current.version_id != if_match:
            raise precondition_failed(
                f"If-Match W/\"{if_match}\" does not match the current version {current.version_id} of {type}/{id}"
            )
    expected = current.version_id if current is not None else NEW
    v = await write_version(svc, uow, type, id, resource, expected_version=expected, current=current,
                            method=method)
    return v, not live


def check_body_id(resource: dict[str, Any], id: str) -> None:
    """An update's body must carry the URL's id (http.html#update)."""
    body_id = resource.get("id")
    if body_id is None:
        raise invalid("The resource has no id; an update needs the id of the URL in the body", "id")
    if body_id != id:
        raise invalid(f"The resource id '{body_id}' does not match the URL id '{id}'", "id")


async def update_in(svc: Services, u: UnitContext, req: FhirRequest, type: str, id: str,
                    resource: dict[str, Any], issues: list[Issue], *, location: bool = False) -> FhirResponse:
    """Write a validated ``resource`` as ``type/id`` inside ``u`` and build the answer."""
    v, created = await put_resource(svc, u.uow, req, type, id, resource)
    notify(svc, u, resource, deleted=False)
    return prefer_return(req, version_response(req, v, 201 if created else 200, with_location=created or location),
                         issues)


async def update(svc: Services, req: FhirRequest, type: str, id: str, ctx: UnitContext | None = None) -> FhirResponse:
    check_type(svc, type)
    check_id(id)
    resource = require_resource_body(req, type)
    check_body_id(resource, id)
    issues = validate(svc, resource)
    async with unit(svc, ctx) as u:
        return await update_in(svc, u, req, type, id, resource, issues)


async def conditional_target(svc: Services, uow: UnitOfWork, type: str, query: list[tuple[str, str]],
                             body_id: str | None) -> str:
    """The id a conditional update writes: the single match, else the body's id or a new one."""
    found = await matches(svc, uow, type, query)
    if len(found) > 1:
        raise precondition_failed(f"The criteria match more than one {type}: the update is refused")
    if found:
        target = found[0].id
        if body_id is not None and body_id != target:
            raise invalid(f"The resource id '{body_id}' differs from the matched resource {type}/{target}", "id")
        return target
    return body_id or svc.clock.new_id()


async def conditional_update(svc: Services, req: FhirRequest, type: str,
                             ctx: UnitContext | None = None) -> FhirResponse:
    check_type(svc, type)
    if not req.query:
        raise invalid("A conditional update needs search criteria")
    resource = require_resource_body(req, type)
    body_id = resource.get("id")
    if body_id is not None:
        check_id(body_id)
    issues = validate(svc, resource)
    async with unit(svc, ctx) as u:
        target = await conditional_target(svc, u.uow, type, req.query, body_id)
        return await update_in(svc, u, req, type, target, resource | {"id": target}, issues, location=True)
