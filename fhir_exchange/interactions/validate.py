"""$validate: https://hl7.org/fhir/R4/resource-operation-validate.html

``POST [base]/[type]/$validate`` and ``[base]/[type]/[id]/$validate`` (also GET at instance level,
to validate the stored resource). The resource comes as the body, or as the ``resource`` parameter
of a Parameters body; ``mode`` (create | update | delete | profile) and ``profile`` come as query
parameters or Parameters. The answer is 200 with an OperationOutcome whenever validation ran, valid
or not (as HAPI FHIR and Firely Server answer); a request that cannot be validated at all is a 400.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_exchange.errors import Issue, invalid, operation_outcome
from fhir_exchange.interactions.common import check_id
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = frozenset({"create", "update", "delete", "profile"})


def _parameters(body: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(resource, {mode, profile}) from a Parameters body, or the body itself as the resource."""
    if not isinstance(body, dict):
        return None, {}
    if body.get("resourceType") != "Parameters":
        return body, {}
    resource: dict[str, Any] | None = None
    values: dict[str, str] = {}
    params = body.get("parameter")
    for p in params if isinstance(params, list) else []:
        if not isinstance(p, dict):
            continue
        name = p.get("name")
        if name == "resource" and isinstance(p.get("resource"), dict):
            resource = p["resource"]
        elif name in ("mode", "profile"):
            value = p.get("valueCode", p.get("valueUri", p.get("valueCanonical", p.get("valueString"))))
            if isinstance(value, str):
                values[name] = value
    if resource is None and not values:
        return body, {}  # a Parameters resource to be validated itself
    return resource, values


async def validate_operation(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    assert type is not None
    svc = repo.svc
    resource, values = _parameters(req.body)
    mode = req.query_value("mode") or values.get("mode")
    profile = req.query_value("profile") or values.get("profile")
    if mode is not None and mode not in MODES:
        raise invalid(f"Unknown $validate mode '{mode}': use create, update, delete or profile", "mode")
    issues: list[Issue] = []
    if id is not None:
        check_id(id)
    if resource is None:
        if id is None:
            raise invalid("$validate needs a resource: the body, or the 'resource' parameter of a Parameters body")
        current = await repo.read(type, id)
        if current is None or current.deleted:
            raise invalid(f"$validate: {type}/{id} is not stored, and no resource was given")
        if mode == "delete":
            return _outcome([Issue("information", "informational", f"{type}/{id} may be deleted")])
        resource = orjson.loads(current.body)
    if resource.get("resourceType") != type:
        issues.append(Issue("error", "invalid",
                            f"The resource type '{resource.get('resourceType')}' does not match '{type}'",
                            ("resourceType",), "resource-type-mismatch"))
        return _outcome(issues)
    if mode == "update":
        if not resource.get("id"):
            issues.append(Issue("error", "required", "An update needs the resource id", (f"{type}.id",)))
        elif id is not None and resource.get("id") != id:
            issues.append(Issue("error", "invalid", f"The resource id '{resource.get('id')}' is not '{id}'",
                                (f"{type}.id",)))
    if mode == "delete":
        target = id or resource.get("id")
        stored = await repo.read(type, target) if isinstance(target, str) else None
        if stored is None or stored.deleted:
            issues.append(Issue("error", "not-found", f"{type}/{target} is not stored: nothing to delete"))
        return _outcome(issues or [Issue("information", "informational", f"{type}/{target} may be deleted")])
    profiles = repo.profiles(resource)
    if profile:
        resolved = svc.definitions.resolve(profile)
        if resolved is None:
            issues.append(Issue("error", "not-found", f"The profile '{profile}' is not known to this server",
                                (), "profile-unknown"))
            return _outcome(issues)
        # A ValueSet or CodeSystem URL resolves too, but is no profile: validating against it checked nothing.
        if resolved.get("resourceType") != "StructureDefinition":
            issues.append(Issue("error", "invalid",
                                f"'{profile}' is a {resolved.get('resourceType')}, not a StructureDefinition",
                                (), "profile-unknown"))
            return _outcome(issues)
        # A datatype or another type's profile cannot apply to this resource (string, Observation...).
        if resolved.get("type") not in (type, "Resource", "DomainResource"):
            issues.append(Issue("error", "invalid",
                                f"The profile '{profile}' constrains {resolved.get('type')}, not {type}",
                                (), "profile-wrong-type"))
            return _outcome(issues)
        profiles = [*profiles, profile]
    issues.extend(repo.check(resource, profiles=profiles))
    return _outcome(issues)


def _outcome(issues: list[Issue]) -> FhirResponse:
    if not any(i.severity in ("error", "fatal", "warning") for i in issues):
        issues = [*issues, Issue("information", "informational", "Validation successful: no errors or warnings")]
    return FhirResponse(200, resource=operation_outcome(issues))


def install(operations: OperationRegistry) -> None:
    operations.register(Operation("validate", validate_operation, DEFINITION, type=True, instance=True,
                                         methods=("POST", "GET")))
