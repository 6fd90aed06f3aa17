"""Bulk data status and files: https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-status-request

The HTTP side of an export job (the kick-off is the ``$export`` operation, ``interactions/export.py``):

- ``GET [base]/bulk-status/<id>``: 202 with ``X-Progress`` and ``Retry-After`` while the job runs, 200
  with the manifest (``application/json``, ``Expires``) once complete, an OperationOutcome (the job's
  error status, or 500 when its process stopped renewing the heartbeat) when it failed;
- ``DELETE [base]/bulk-status/<id>``: cancels the job and removes its files (202);
- ``GET [base]/bulk-files/<id>/<file>``: one NDJSON file, streamed from disk
  (``application/fhir+ndjson``).

Every call is authenticated as FHIR requests are and audited (one AuditEvent each); a job is visible
only to the institution whose client started it (the system actor for jobs it started): 404 for
anyone else. Any worker process answers for any job: the state is a store record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from fhir_exchange.api.telemetry import TRAIL_KEY
from fhir_exchange.errors import Category, FhirError, operation_outcome
from fhir_exchange.interactions.export_job import Exports, Job
from fhir_exchange.security import scopes
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.audit import AuditSink, AuditTrail, audit_event

log = logging.getLogger("fhir_exchange")

RETRY_AFTER = "2"  # seconds a client should wait between two polls


class Endpoint(Protocol):
    """What the FHIR endpoint (api/app.py ``FhirEndpoint``) lends: authentication, the base URL and the
    audit sink (None while auditing is off)."""

    auth: Any
    audit: AuditSink | None

    def base_url(self, request: Request) -> str: ...


def _outcome(err: FhirError) -> Response:
    return Response(orjson.dumps(operation_outcome(err.issues)), status_code=err.status, headers=err.headers,
                    media_type="application/fhir+json; charset=utf-8")


class BulkEndpoints:
    def __init__(self, exports: Exports, edge: Endpoint, base: str) -> None:
        self.exports = exports
        self.edge = edge
        self.base = base

    def routes(self) -> list[Route]:
        return [Route(f"{self.base}/bulk-status/{{job}}", self.status, methods=["GET", "DELETE"]),
                Route(f"{self.base}/bulk-files/{{job}}/{{file}}", self.download, methods=["GET"])]

    async def _handle(self, request: Request, what: str,
                      answer: Callable[[Actor, AuditTrail], Awaitable[Response]]) -> Response:
        trail = request.scope[TRAIL_KEY] = AuditTrail()
        trail.route("operation", None, None)
        actor = Actor(client_id="anonymous")
        diagnostics = ""
        try:
            actor = await self.edge.auth.actor(request, self.edge.base_url(request), what)
            response = await answer(actor, trail)
        except FhirError as err:
            response, diagnostics = _outcome(err), err.diagnostics
        if self.edge.audit is not None:
            # The AuditEvent names the job (and file) in its query entity: an export is an access.
            event = audit_event(actor=actor, trail=trail, method=request.method, path=request.url.path,
                                query=f"_jobId={request.path_params['job']}", status=response.status_code,
                                diagnostics=diagnostics, address=request.client.host if request.client else None,
                                recorded=self.exports.now(), server=self.edge.base_url(request))
            try:
                await self.edge.audit.record(event, actor.institution, frozenset(trail.owners))
            except Exception:  # fail closed, as every FHIR request
                log.exception("The audit record of %s %s could not be written", request.method, request.url.path)
                return _outcome(FhirError(Category.TRANSIENT, "The audit record could not be written: the request "
                                          "was not answered", headers={"Retry-After": "5"}))
        return response

    async def _job(self, actor: Actor, job_id: str) -> Job:
        job = await self.exports.load(job_id)
        if job is None or not job.allows(actor):
            raise FhirError(Category.NOT_FOUND, f"No bulk export {job_id} (unknown, expired or cancelled)")
        return job

    async def status(self, request: Request) -> Response:
        job_id = request.path_params["job"]

        async def answer(actor: Actor, trail: AuditTrail) -> Response:
            job = await self._job(actor, job_id)
            if request.method == "DELETE":
                await self.exports.cancel(job)
                body = operation_outcome([])  # "All OK"
                return Response(orjson.dumps(body), status_code=202, media_type="application/fhir+json; charset=utf-8")
            if job.status == "in-progress" and not self.exports.stalled(job):
                return Response(status_code=202, headers={"X-Progress": job.progress[:100],
                                                          "Retry-After": RETRY_AFTER})
            if job.status == "completed":
                return Response(orjson.dumps(job.manifest()), status_code=200, media_type="application/json",
                                headers={"Expires": _http_date(job.expires)})
            error = job.error or "The export stopped: the process running it no longer renews its heartbeat"
            status = job.error_status if job.status == "failed" else 500
            category = Category.TRANSIENT if status == 503 else (Category.INVALID if status < 500 else Category.FAULT)
            err = FhirError(category, f"Bulk export {job.id} failed: {error}", code="exception")
            return Response(orjson.dumps(operation_outcome(err.issues)), status_code=status,
                            media_type="application/fhir+json; charset=utf-8")

        return await self._handle(request, f"bulk-status/{job_id}", answer)

    async def download(self, request: Request) -> Response:
        job_id = request.path_params["job"]
        name = request.path_params["file"]

        async def answer(actor: Actor, trail: AuditTrail) -> Response:
            job = await self._job(actor, job_id)
            if job.status != "completed" or name not in job.files():  # never a path of the client's making
                raise FhirError(Category.NOT_FOUND, f"Bulk export {job_id} has no file {name}")
            path = self.exports.folder / job.id / name
            if not path.is_file():
                raise FhirError(Category.NOT_FOUND, f"The file {name} of bulk export {job_id} is gone")
            type = next((o["type"] for o in job.output if o["file"] == name), None)
            if type is not None and not actor.system and not scopes.permits(actor.scopes, type, "r"):
                # Another client of the institution, whose token does not cover what the file holds.
                raise FhirError(Category.FORBIDDEN, f"The access token's scopes do not permit reading {type} "
                                f"(SMART v2: system/{type}.r)", code="forbidden")
            trail.type = type
            return FileResponse(path, media_type="application/fhir+ndjson", filename=None)

        return await self._handle(request, f"bulk-files/{job_id}/{name}", answer)


def _http_date(at: str) -> str:
    from fhir_exchange.interactions.common import http_date

    return http_date(at)
