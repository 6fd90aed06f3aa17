"""HTTP-free request and response of the FHIR router.

The api layer turns an HTTP request into a :class:`FhirRequest`; batch and transaction entries are
turned into the same object, so both go through one dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FhirRequest:
    method: str  # GET | POST | PUT | PATCH | DELETE | HEAD
    path: str  # relative to the FHIR base, without leading slash: "Patient/1/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON (dict or list) or None
    base_url: str = ""  # absolute FHIR base, no trailing slash

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_values(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]

    def query_value(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

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
    headers: dict[str, str] = field(default_factory=dict)
    # Filled for resource-returning interactions so that Prefer and batch entries can use them.
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None  # FHIR instant

    def json(self) -> dict[str, Any] | None:
        if self.resource is not None:
            return self.resource
        if self.body:
            from fhir_exchange.fhir import jsonio

            loaded: dict[str, Any] = jsonio.loads(self.body)
            return loaded
        return None
