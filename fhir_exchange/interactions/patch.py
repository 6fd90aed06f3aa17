"""patch: https://hl7.org/fhir/R4/http.html#patch

``PATCH [base]/[type]/[id]`` with a JSON Patch document (RFC 6902, ``application/json-patch+json``)
or a FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html: a ``Parameters`` resource sent as
``application/fhir+json``, applied by :mod:`fhirpath_patch`); the body's shape tells which (an array
or a Parameters resource). The patched resource is validated like an update; it may not change its
type or id. Conditional patch: ``PATCH [base]/[type]?criteria`` (exactly one match, else 404/412).
"""

from __future__ import annotations

from typing import Any

import jsonpatch

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError, gone, invalid, not_found, precondition_failed
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions import fhirpath_patch
from fhir_exchange.interactions.common import (
    check_id,
    check_type,
    parse_if_match,
    prefer_return,
    version_response,
)
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse


def _apply(defs: Definitions, doc: dict[str, Any], ops: Any, type: str, id: str) -> dict[str, Any]:
    fhirpath = fhirpath_patch.is_fhirpath_patch(ops)
    patched = fhirpath_patch.apply(defs, doc, ops) if fhirpath else _json_patch(doc, ops)
    if not isinstance(patched, dict) or patched.get("resourceType") != type or patched.get("id") != id:
        raise FhirError(Category.UNPROCESSABLE, "A patch may not change the resource type or id",
                        code="processing")
    return patched


def _json_patch(doc: dict[str, Any], ops: Any) -> Any:
    if not isinstance(ops, list):
        raise invalid("A patch body must be a JSON Patch (an array of operations, application/json-patch+json) "
                      "or a FHIRPath Patch (a Parameters resource, application/fhir+json)", code="structure")
    try:
        patched = jsonpatch.JsonPatch(ops).apply(doc)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise FhirError(Category.UNPROCESSABLE, f"JSON Patch test failed: {exc}", code="processing") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError,
            IndexError, ValueError) as exc:
        raise FhirError(Category.UNPROCESSABLE, f"JSON Patch cannot be applied: {exc}",
                        code="processing") from exc
    return patched


async def patch(repo: Repository, req: FhirRequest, type: str, id: str | None) -> FhirResponse:
    check_type(repo.svc, type)
    if id is not None:
        check_id(id)
    async with repo.unit() as w:
        if id is None:
            found = await w.match_one(type, req.query, "Conditional patch refused")
            if found is None:
                raise not_found(f"No {type} matches the criteria")
            id = found.id
        if_match = parse_if_match(req)
        current = await w.current(type, id)
        if current is None or not await w.visible(current):
            raise not_found(f"Resource {type}/{id} is not known")
        if current.deleted:  # as read answers; HAPI FHIR too since hapi-fhir#3788 (PATCH had undeleted it)
            raise gone(f"Resource {type}/{id} was deleted (version {current.version_id})")
        if if_match is not None and if_match != current.version_id:
            raise precondition_failed(
                f"If-Match W/\"{if_match}\" does not match the current version {current.version_id} of {type}/{id}"
            )
        draft = w.prepare(type, _apply(repo.svc.definitions, jsonio.loads(current.body), req.body, type, id))
        written = await w.write(draft, type, id, current=current, method="PATCH")
    return prefer_return(req, version_response(req, written.version), written.issues)
