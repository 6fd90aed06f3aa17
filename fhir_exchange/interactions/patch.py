"""patch: https://hl7.org/fhir/R4/http.html#patch

``PATCH [base]/[type]/[id]`` with a JSON Patch document (RFC 6902, ``application/json-patch+json``).
The patched resource is validated like an update; it may not change its type or id.
Conditional patch: ``PATCH [base]/[type]?criteria`` (exactly one match, else 404/412).
"""

from __future__ import annotations

from typing import Any

import jsonpatch

from fhir_exchange.errors import Category, FhirError, gone, invalid, not_found, precondition_failed
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.common import (
    check_id,
    check_type,
    parse_if_match,
    prefer_return,
    validate,
    version_response,
    write_version,
)
from fhir_exchange.interactions.conditional import matches
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.interactions.unit import UnitContext, notify, unit
from fhir_exchange.store.port import UnitOfWork


def _apply(doc: dict[str, Any], ops: Any, type: str, id: str) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise invalid("A JSON Patch body must be an array of operations", code="structure")
    try:
        patched = jsonpatch.JsonPatch(ops).apply(doc)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise FhirError(Category.UNPROCESSABLE, f"JSON Patch test failed: {exc}", code="processing") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError,
            IndexError, ValueError) as exc:
        raise FhirError(Category.UNPROCESSABLE, f"JSON Patch cannot be applied: {exc}",
                        code="processing") from exc
    if not isinstance(patched, dict) or patched.get("resourceType") != type or patched.get("id") != id:
        raise FhirError(Category.UNPROCESSABLE, "A patch may not change the resource type or id",
                        code="processing")
    return patched


async def patch(svc: Services, req: FhirRequest, type: str, id: str | None,
                ctx: UnitContext | None = None) -> FhirResponse:
    check_type(svc, type)
    if id is not None:
        check_id(id)
    async with unit(svc, ctx) as u:
        if id is None:
            id = await conditional_target(svc, u.uow, type, req.query)
        return await patch_in(svc, u, req, type, id)


async def conditional_target(svc: Services, uow: UnitOfWork, type: str, query: list[tuple[str, str]]) -> str:
    """The single resource a conditional patch changes (none: 404, several: 412)."""
    found = await matches(svc, uow, type, query)
    if len(found) > 1:
        raise precondition_failed(f"The criteria match more than one {type}: the patch is refused")
    if not found:
        raise not_found(f"No {type} matches the criteria")
    return found[0].id


async def patch_in(svc: Services, u: UnitContext, req: FhirRequest, type: str, id: str) -> FhirResponse:
    """Apply the JSON Patch of ``req`` to ``type/id`` inside ``u``."""
    if_match = parse_if_match(req)
    uow = u.uow
    current = await uow.read(type, id)
    if current is None:
        raise not_found(f"Resource {type}/{id} is not known")
    if current.deleted:  # as read answers; HAPI FHIR too since hapi-fhir#3788 (PATCH had undeleted it)
        raise gone(f"Resource {type}/{id} was deleted (version {current.version_id})")
    if if_match is not None and if_match != current.version_id:
        raise precondition_failed(
            f"If-Match W/\"{if_match}\" does not match the current version {current.version_id} of {type}/{id}"
        )
    patched = _apply(jsonio.loads(current.body), req.body, type, id)
    issues = validate(svc, patched)
    v = await write_version(svc, uow, type, id, patched, expected_version=current.version_id,
                            current=current, method="PATCH")
    notify(svc, u, patched, deleted=False)
    return prefer_return(req, version_response(req, v), issues)
