"""Patient/$everything: https://hl7.org/fhir/R4/patient-operation-everything.html

``GET|POST [base]/Patient/[id]/$everything``: the patient and every resource of its compartment
(the Patient CompartmentDefinition) that the caller may see, as a searchset Bundle; ``_type``
restricts the types, ``_since`` the last update, ``_count`` caps each type's share (default and
at most the server's ``max_count``; a type cut short is said in a warning OperationOutcome entry).
Every read goes through the repository, so isolation, grants and the token's scopes apply to each
resource as to a search.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import Issue, invalid, not_found, operation_outcome
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.bundle_json import splice_bundle
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.search.parse import parse

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


async def everything(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    assert id is not None
    svc = repo.svc
    patient = await repo.access("Patient", id)
    if patient is None or patient.deleted:
        raise not_found(f"Resource Patient/{id} is not known")
    cd = svc.definitions.compartment_definition("Patient") or {}
    members = [r["code"] for r in cd.get("resource", []) if r.get("param") and r.get("code") != "Patient"]
    wanted = [t for v in req.query_values("_type") for t in v.split(",") if t]
    unknown = [t for t in wanted if t != "Patient" and t not in members]
    if unknown:
        raise invalid(f"_type {', '.join(unknown)}: not in the Patient compartment", "_type")
    types = [t for t in members if not wanted or t in wanted]
    count = min(int(c) if (c := req.query_value("_count")) and c.isdigit() else svc.settings.max_count,
                svc.settings.max_count)
    since = req.query_value("_since")
    entries: list[tuple[dict[str, Any], bytes | None]] = []
    if not wanted or "Patient" in wanted:
        entries.append(({"fullUrl": f"{req.base_url}/Patient/{id}", "search": {"mode": "match"}}, patient.body))
    cut: list[str] = []
    for t in types:
        params = [("_count", str(count)), ("_total", "none")] + ([("_lastUpdated", f"ge{since}")] if since else [])
        query = parse(svc.definitions, t, params, default_count=count, max_count=count, compartment=("Patient", id))
        result = await repo.search(query)
        for v in result.matches:
            entries.append(({"fullUrl": f"{req.base_url}/{v.type}/{v.id}", "search": {"mode": "match"}}, v.body))
        if len(result.matches) >= count:
            cut.append(t)
    if cut:
        outcome = operation_outcome([Issue("warning", "incomplete", f"Only the first {count} resources of "
                                           f"{', '.join(cut)} are included (_count)")])
        entries.append(({"search": {"mode": "outcome"}}, jsonio.dumps(outcome)))
    head = {"resourceType": "Bundle", "id": svc.clock.new_id(), "type": "searchset",
            "total": sum(1 for e in entries if e[0].get("search", {}).get("mode") == "match")}
    return FhirResponse(200, body=splice_bundle(head, entries))


def install(operations: OperationRegistry) -> None:
    operations.register(Operation("everything", everything, DEFINITION, instance=True, resource_types=("Patient",),
                                  methods=("GET", "POST"), permission="r"))
