"""Helpers shared by the interactions: id rules, versions to responses, Prefer, If-Match."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fhir_exchange.errors import Category, FhirError, Issue, invalid, not_found, operation_outcome
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.store.port import ResourceVersion

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_type(svc: Services, type: str) -> None:
    if not svc.definitions.is_resource_type(type):
        raise FhirError(Category.NOT_FOUND, f"Unknown resource type '{type}'", code="not-supported")


def check_id(id: Any) -> None:
    # Ids also come from bodies (a conditional update's resource.id): a number or list is refused, not a 500.
    if not isinstance(id, str) or not ID_RE.match(id):
        raise invalid(f"Invalid resource id '{id}': ids are 1-64 of A-Z a-z 0-9 - .")


def parse_version_id(vid: str) -> int:
    if not vid.isdigit() or len(vid) > 18:
        raise not_found(f"Unknown version '{vid}'")
    return int(vid)


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


@functools.lru_cache(maxsize=4096)  # Last-Modified of every read: the same instants come back
def http_date(fhir_instant: str) -> str:
    dt = datetime.fromisoformat(fhir_instant.replace("Z", "+00:00"))
    return format_datetime(dt, usegmt=True)


def location(req: FhirRequest, v: ResourceVersion) -> str:
    return f"{req.base_url}/{v.type}/{v.id}/_history/{v.version_id}"


def version_response(req: FhirRequest, v: ResourceVersion, status: int = 200, *,
                     with_location: bool = False) -> FhirResponse:
    return FhirResponse(status=status, body=v.body, etag=etag(v.version_id), last_modified=v.last_updated,
                        location=location(req, v) if with_location else None)


def require_resource_body(req: FhirRequest, type: str) -> dict[str, Any]:
    body = req.body
    if not isinstance(body, dict):
        raise invalid("The request body must be a FHIR resource (a JSON object)", code="structure")
    rt = body.get("resourceType")
    if rt is None:
        raise invalid("The resource has no resourceType", "resourceType", code="structure")
    if rt != type:
        raise invalid(f"The resource type '{rt}' does not match the URL type '{type}'", "resourceType")
    return body


def prefer_return(req: FhirRequest, resp: FhirResponse, issues: Sequence[Issue] = ()) -> FhirResponse:
    """Apply ``Prefer: return=`` (http.html#ops) to a write response."""
    pref = req.prefer.get("return", "representation")
    if pref == "minimal":
        resp.body = None
        resp.resource = None
    elif pref == "OperationOutcome":
        resp.body = None
        resp.resource = operation_outcome(issues or [Issue("information", "informational", "All OK")])
    return resp


def parse_if_match(req: FhirRequest) -> int | None:
    raw = req.header("if-match")
    if raw is None:
        return None
    m = re.fullmatch(r'\s*(?:W/)?"?(\d+)"?\s*', raw)
    if not m:
        raise invalid(f"Malformed If-Match header '{raw}': expected W/\"<versionId>\"")
    return int(m.group(1))
