"""Bulk data export kick-off: https://hl7.org/fhir/uv/bulkdata/STU2/export.html

``GET|POST [base]/$export`` (system), ``[base]/Patient/$export`` (every patient the caller sees and
their compartments) and ``[base]/Group/[id]/$export`` (the Group's member patients), with
``Prefer: respond-async``: the parameters are checked here (``_outputFormat``, ``_type``, ``_since``,
``_typeFilter``; 400 naming the parameter), the job's record is written and its task started
(``export_job.py``), and the answer is 202 with ``Content-Location`` = the status URL
(``[base]/bulk-status/<id>``, served by ``api/bulk.py`` with the file downloads).

Scopes: the caller needs read and search on every exported type (``system/Patient.rs``); without
``_type`` the export holds the types its scopes cover (every type for the system actor, AuditEvent
only when asked for). ``_elements`` and ``includeAssociatedData`` are ignored with a warning in the
manifest's error file, as the specification allows; ``patient`` (POST) is refused with a 400.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import parse_qsl, urlencode

from fhir_exchange.clock import instant
from fhir_exchange.errors import Category, FhirError, invalid, not_found
from fhir_exchange.interactions.export_job import Exports, Job
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.search.parse import parse
from fhir_exchange.security import scopes

DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
PATIENT_DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
GROUP_DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
CAPABILITY = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")
_KNOWN = frozenset({"_outputFormat", "_type", "_since", "_typeFilter", "_elements", "includeAssociatedData",
                    "patient", "_format", "_pretty"})
# Result parameters shape a page; a _typeFilter is criteria only.
_NOT_FILTER = frozenset({"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_include",
                         "_revinclude", "_contained", "_containedType", "_format", "_pretty"})


def parameters(req: FhirRequest) -> list[tuple[str, str]]:
    """The kick-off's parameters: the query, and for POST the Parameters body
    (export.html#bulk-data-kick-off-request)."""
    pairs = list(req.query)
    body = req.body
    if req.method == "POST" and body is not None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise invalid("A POST $export body must be a Parameters resource")
        for p in body.get("parameter") or []:
            name = p.get("name") if isinstance(p, dict) else None
            values = [v for k, v in p.items() if k.startswith("value")] if isinstance(name, str) else []
            if not isinstance(name, str) or len(values) != 1:
                raise invalid("Each $export parameter needs a name and one value", "Parameters.parameter")
            value = values[0]
            if isinstance(value, dict):  # valueReference (patient)
                value = value.get("reference", "")
            pairs.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return pairs


class Kickoff:
    def __init__(self, exports: Exports) -> None:
        self.exports = exports

    async def __call__(self, repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
        svc = repo.svc
        if type is not None and (type, id is not None) not in (("Patient", False), ("Group", True)):
            where = f"{type}/{id}" if id else type
            raise FhirError(Category.NOT_FOUND, f"$export is defined on the system, Patient and Group/[id], "
                            f"not on {where}", code="not-supported")
        if req.prefer.get("respond-async") is None:
            raise invalid("$export is asynchronous: send 'Prefer: respond-async' (bulk data export.html)", "Prefer")
        pairs = parameters(req)
        unknown = sorted({k for k, _ in pairs if k not in _KNOWN})
        if unknown and req.prefer.get("handling") == "strict":
            raise invalid(f"Unknown $export parameters: {', '.join(unknown)}", unknown[0])
        values: dict[str, list[str]] = {}
        for k, v in pairs:
            values.setdefault(k, []).append(v)
        warnings: list[str] = []
        for fmt in values.get("_outputFormat", []):
            if fmt.replace(" ", "+") not in FORMATS:  # an unencoded '+' in a query string arrives as a space
                raise invalid(f"_outputFormat '{fmt}' is not supported: use application/fhir+ndjson", "_outputFormat")
        if values.get("patient"):
            raise invalid("The 'patient' parameter is not supported: export a Group of the patients instead", "patient")
        for name in ("_elements", "includeAssociatedData"):
            if values.get(name):
                warnings.append(f"{name} is not supported and was ignored: the files hold whole resources")
        group: str | None = None
        level = "system"
        if type == "Patient":
            level = "patient"
        elif type == "Group":
            assert id is not None
            found = await repo.access("Group", id)
            if found is None or found.deleted:
                raise not_found(f"Resource Group/{id} is not known")
            level, group = "group", id
        types = self._types(repo, level, [t for v in values.get("_type", []) for t in v.split(",") if t.strip()])
        since = self._since(values.get("_since", []))
        filters = self._filters(repo, types, values.get("_typeFilter", []))
        now = svc.clock.now()
        actor = req.actor
        query = urlencode(pairs if req.method == "GET" else req.query, safe=",")
        job = Job(id=svc.clock.new_id(), request=f"{req.base_url}/{req.path}" + (f"?{query}" if query else ""),
                  base_url=req.base_url, level=level, types=types, transaction_time=instant(now),
                  institution=None if actor.system else actor.institution, client_id=actor.client_id,
                  requires_token=svc.settings.auth,
                  expires=instant(datetime.fromtimestamp(now.timestamp() + svc.settings.export_retention, now.tzinfo)),
                  group=group, since=since, filters=filters, warnings=warnings)
        await self.exports.cleanup()  # expired jobs' files go at the next kick-off (and on the sweep)
        await self.exports.start(job, actor)
        outcome = {"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"Export {job.id} started: poll {req.base_url}/bulk-status/{job.id}"}]}
        return FhirResponse(202, resource=outcome, location=f"{req.base_url}/bulk-status/{job.id}")

    @staticmethod
    def _types(repo: Repository, level: str, wanted: list[str]) -> list[str]:
        defs = repo.svc.definitions
        actor = repo.actor
        wanted = [t.strip() for t in wanted]
        for t in wanted:
            if not defs.is_resource_type(t):
                raise invalid(f"_type '{t}' is not a resource type", "_type")
        if level == "system":
            allowed = [t for t in defs.resource_types()]
        else:
            cd = defs.compartment_definition("Patient") or {}
            allowed = ["Patient", *(r["code"] for r in cd.get("resource", [])
                                    if r.get("param") and r.get("code") != "Patient")]
        outside = [t for t in wanted if t not in allowed]
        if outside:
            raise invalid(f"_type {', '.join(outside)}: not in the Patient compartment", "_type")

        def permitted(t: str) -> bool:
            return actor.system or (scopes.permits(actor.scopes, t, "r") and scopes.permits(actor.scopes, t, "s"))

        if wanted:
            refused = [t for t in wanted if not permitted(t)]
            if refused:
                raise FhirError(Category.FORBIDDEN, f"The access token's scopes do not permit reading and searching "
                                f"{', '.join(refused)} (SMART v2: system/{refused[0]}.rs)", code="forbidden")
            return list(dict.fromkeys(wanted))
        types = [t for t in allowed if t != "AuditEvent" and permitted(t)]
        if not types:
            raise FhirError(Category.FORBIDDEN, "The access token's scopes permit reading and searching no type "
                            "(SMART v2: system/Patient.rs, ...)", code="forbidden")
        return types

    @staticmethod
    def _since(values: list[str]) -> str | None:
        if not values:
            return None
        if len(values) > 1:
            raise invalid("_since is given more than once", "_since")
        raw = values[0]
        if not _INSTANT.match(raw):
            raise invalid(f"_since '{raw}' is not a FHIR instant (e.g. 2026-01-01T00:00:00Z)", "_since")
        try:
            return instant(datetime.fromisoformat(raw.replace("Z", "+00:00")))
        except ValueError:
            raise invalid(f"_since '{raw}' is not a valid instant", "_since") from None

    @staticmethod
    def _filters(repo: Repository, types: list[str], raw: list[str]) -> dict[str, list[str]]:
        defs = repo.svc.definitions
        out: dict[str, list[str]] = {}
        # Repeated, or comma-separated where a comma starts the next Type?query (a comma inside criteria
        # is an OR of values).
        for value in (v for r in raw for v in _FILTER_SPLIT.split(r) if v):
            type, sep, query = value.partition("?")
            if not sep or not query:
                raise invalid(f"_typeFilter '{value}' is not Type?criteria", "_typeFilter")
            if type not in types:
                raise invalid(f"_typeFilter '{value}': {type} is not exported (see _type)", "_typeFilter")
            pairs = parse_qsl(query, keep_blank_values=True)
            shaping = [k for k, _ in pairs if k.partition(":")[0] in _NOT_FILTER]
            if shaping or not pairs:
                raise invalid(f"_typeFilter '{value}': only search criteria may be used"
                              + (f", not {shaping[0]}" if shaping else ""), "_typeFilter")
            try:
                parse(defs, type, pairs, strict=True)
            except FhirError as err:
                raise invalid(f"_typeFilter '{value}': {err.diagnostics}", "_typeFilter") from None
            out.setdefault(type, []).append(query)
        return out


def install(operations: OperationRegistry, exports: Exports) -> None:
    kickoff = Kickoff(exports)

    async def run(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
        return await kickoff(repo, req, type, id)

    operations.register(Operation("export", run, DEFINITION, system=True, type=True, instance=True,
                                  resource_types=("Patient", "Group"), methods=("GET", "POST")))
