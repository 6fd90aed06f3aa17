"""HTTP-free request and response of the FHIR router.

The api layer turns an HTTP request into a :class:`FhirRequest`; Bundle entries, the entries of a
message and portal pages are turned into the same object, so all go through one dispatcher. The
response carries typed fields (status, version, location...); only the api layer renders them as
HTTP headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.fhir import jsonio
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.audit import AuditTrail


@dataclass(slots=True)
class FhirRequest:
    method: str  # GET | POST | PUT | PATCH | DELETE | HEAD
    path: str  # relative to the FHIR base, without leading slash: "Patient/1/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON (dict or list) or None
    base_url: str = ""  # absolute FHIR base, no trailing slash
    actor: Actor = SYSTEM  # who is asking; copied into every request derived from this one
    # What the request did, for its AuditEvent: shared with every request derived from this one.
    trail: AuditTrail = field(default_factory=AuditTrail)
    # The id a transaction's plan gave a create or a conditional update that creates (its urn:uuid
    # references were rewritten to it before anything was written). Never set from HTTP.
    assigned_id: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_values(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]

    def query_value(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

    def derive(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
               headers: dict[str, str] | None = None, body: Any = None) -> FhirRequest:
        """A request made on behalf of this one (a Bundle entry, a message's content): same actor and
        base URL, and the outer ``Prefer`` unless the derived request states its own."""
        derived_headers = dict(headers or {})
        prefer = self.header("prefer")
        if prefer and "prefer" not in derived_headers:
            derived_headers["prefer"] = prefer
        return FhirRequest(method, path, query or [], derived_headers, body, self.base_url, self.actor, self.trail)

    @property
    def prefer(self) -> dict[str, str]:
        """``Prefer`` header (RFC 7240) as a dict: ``return=minimal, handling=strict``."""
        out: dict[str, str] = {}
        raw = self.header("prefer")
        if raw:
            for part in raw.replace(";", ",").split(","):
                k, _, v = part.strip().partition("=")
                if k:
                    out[k.strip().lower()] = v.strip().strip('"')
        return out


@dataclass(slots=True)
class FhirResponse:
    status: int
    resource: dict[str, Any] | None = None  # the body as JSON, or
    body: bytes | None = None  # the body as stored bytes (fast path; never re-serialised)
    # What the api layer renders as ETag, Last-Modified and Location (and Bundle entries as
    # response.etag / lastModified / location).
    location: str | None = None
    etag: str | None = None  # W/"<versionId>"
    last_modified: str | None = None  # FHIR instant

    def json(self) -> dict[str, Any] | None:
        if self.resource is not None:
            return self.resource
        if self.body:
            loaded: dict[str, Any] = jsonio.loads(self.body)
            return loaded
        return None
