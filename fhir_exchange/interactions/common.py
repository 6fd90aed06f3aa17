"""Helpers shared by the interactions: id rules, versions to responses, write path, Prefer."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.errors import Category, FhirError, Issue, invalid, not_found, operation_outcome
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.store.port import ResourceVersion, UnitOfWork

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# Issue codes meaning "the JSON does not fit the structure" (400); everything else that fails
# validation breaks a rule of the content (422), as HAPI FHIR and Firely Server answer.
STRUCTURAL_CODES = frozenset({"structure", "required", "value", "invalid", "too-long"})


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


def http_date(fhir_instant: str) -> str:
    dt = datetime.fromisoformat(fhir_instant.replace("Z", "+00:00"))
    return format_datetime(dt, usegmt=True)


def location(req: FhirRequest, v: ResourceVersion) -> str:
    return f"{req.base_url}/{v.type}/{v.id}/_history/{v.version_id}"


def version_response(req: FhirRequest, v: ResourceVersion, status: int = 200, *,
                     with_location: bool = False) -> FhirResponse:
    resp = FhirResponse(status=status, body=v.body, etag=etag(v.version_id), last_modified=v.last_updated)
    resp.headers["ETag"] = resp.etag  # type: ignore[assignment]
    resp.headers["Last-Modified"] = http_date(v.last_updated)
    if with_location:
        resp.location = location(req, v)
        resp.headers["Location"] = resp.location
    return resp


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


def validation_profiles(svc: Services, resource: dict[str, Any]) -> list[str]:
    """The profiles the server requires of this resource, besides its own ``meta.profile`` (which the
    validator reads itself): per-type settings, and those the selectors (the consult rules) pick."""
    rt = resource.get("resourceType")
    out = [url for type, url in svc.settings.required_profile_pairs if type == rt]
    for select in svc.profile_selectors:
        out.extend(u for u in select(resource) if u not in out)
    return out


def validate(svc: Services, resource: dict[str, Any]) -> list[Issue]:
    """Validate a resource for writing: raise on errors, return warnings and information."""
    # meta and meta.profile are client input: anything but an object and a list is left to the validator
    # to refuse (a string profile would otherwise be read character by character).
    issues = svc.validator.validate(resource, profiles=validation_profiles(svc, resource),
                                    resource_type=resource.get("resourceType"))
    for rule in svc.write_rules.get(str(resource.get("resourceType")), ()):
        issues = [*issues, *rule(resource)]
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        structural = all(i.code in STRUCTURAL_CODES for i in errors)
        raise FhirError(
            Category.INVALID if structural else Category.UNPROCESSABLE,
            errors[0].diagnostics,
            issues=issues,
        )
    return issues


async def write_version(
    svc: Services, uow: UnitOfWork, type: str, id: str, resource: dict[str, Any], *,
    expected_version: int, current: ResourceVersion | None, method: str,
) -> ResourceVersion:
    """Set the server-owned meta and store a new version (the resource must be validated)."""
    version_id = (current.version_id + 1) if current else 1
    now = instant(svc.clock.now())
    if current and now < current.last_updated:  # a clock step back must not reorder history
        now = current.last_updated
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = now
    out = {"resourceType": type, "id": id, "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
    try:
        body = jsonio.dumps(out)
    except TypeError as exc:  # orjson parses 1024 levels of nesting but writes only 254: refuse, not 500
        raise invalid(f"{type}/{id} cannot be stored: {exc} (JSON nested deeper than 254 levels)",
                      type, code="too-costly") from None
    v = ResourceVersion(type, id, version_id, now, False, body, method)
    await uow.put(v, out, expected_version=expected_version)
    return v


def prefer_return(req: FhirRequest, resp: FhirResponse, issues: list[Issue] | None = None) -> FhirResponse:
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
