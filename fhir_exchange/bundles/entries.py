"""Bundle entries as router requests, and router answers as response entries:
https://hl7.org/fhir/R4/bundle.html and https://hl7.org/fhir/R4/http.html#transaction-response

``entry.request`` becomes a :class:`FhirRequest` (method, url split into path and query, ``ifMatch`` /
``ifNoneExist`` / ``ifNoneMatch`` / ``ifModifiedSince`` as the HTTP headers they stand for, the outer
request's actor, base URL and ``Prefer``); a :class:`FhirResponse` or :class:`FhirError` becomes ``entry.response``
(status, location, etag, lastModified, outcome) plus ``entry.resource``. Resource bodies are spliced
in as stored bytes, never re-serialised.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fhir_exchange.errors import FhirError, Issue, invalid
from fhir_exchange.interactions.bundle_json import splice_bundle
from fhir_exchange.interactions.request import FhirRequest, FhirResponse

_HEADERS = {"ifMatch": "if-match", "ifNoneExist": "if-none-exist", "ifNoneMatch": "if-none-match",
            "ifModifiedSince": "if-modified-since"}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_JSON_PATCH_TYPES = frozenset({"application/json-patch+json", "application/fhir+json-patch"})


@dataclass(slots=True)
class Entry:
    """One request entry of a batch or transaction Bundle."""

    index: int
    full_url: str | None
    req: FhirRequest
    segments: tuple[str, ...]  # the path split on "/"

    @property
    def method(self) -> str:
        return self.req.method

    @property
    def resource(self) -> Any:
        return self.req.body

    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    def label(self) -> str:
        return f"entry {self.index}" + (f" (fullUrl {self.full_url})" if self.full_url else "")


def bundle_of(req: FhirRequest, types: tuple[str, ...]) -> dict[str, Any]:
    body = req.body
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise invalid("POST to the base needs a Bundle", "Bundle", code="structure")
    if body.get("type") not in types:
        raise invalid(f"Bundle.type must be one of {', '.join(types)} here, not '{body.get('type')}'", "Bundle.type")
    return body


def bundle_entries(bundle: dict[str, Any]) -> list[Any]:
    """``Bundle.entry`` as a list; absent (or null) is no entries. Anything else that is not an array is
    refused: ``entry: {}`` or ``entry: ""`` must not pass for an empty Bundle (``or []`` let them through)."""
    raw = bundle.get("entry")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid("Bundle.entry must be an array", "Bundle.entry", code="structure")
    return raw


def entry_request(raw: Any, index: int, outer: FhirRequest) -> Entry:
    """The request an entry stands for; a malformed entry raises naming it (bdl-3: request is 1..1)."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise invalid(f"{where} is not an object", where, code="structure")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise invalid(f"{where}.fullUrl must be a string", f"{where}.fullUrl")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise invalid(f"{where} has no request (bdl-3)", f"{where}.request", code="required")
    method = request.get("method")
    url = request.get("url")
    if not isinstance(method, str) or method not in METHODS:  # a list or object is not even hashable
        raise invalid(f"{where}.request.method '{method}' is not one of {', '.join(sorted(METHODS))}",
                      f"{where}.request.method")
    if not isinstance(url, str) or not url.strip():
        raise invalid(f"{where}.request.url is missing", f"{where}.request.url", code="required")
    url = url.strip()
    base = outer.base_url
    if "://" in url:
        if base and url.startswith(base + "/"):
            url = url[len(base) + 1:]
        else:
            raise invalid(f"{where}.request.url '{url}' is not on this server; use a URL relative to the base",
                          f"{where}.request.url")
    path, _, qs = url.lstrip("/").partition("?")
    query = parse_qsl(qs, keep_blank_values=True) if qs else []
    headers: dict[str, str] = {}
    for key, header in _HEADERS.items():
        value = request.get(key)
        if isinstance(value, str) and value:
            headers[header] = value
    body = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(body, dict) and not path.endswith("_search"):
        raise invalid(f"{where} ({method} {url}) has no resource", f"{where}.resource", code="required")
    if method == "PATCH":
        body = _patch_body(body, where)
    req = outer.derive(method, path, query, headers, body)
    return Entry(index, full_url, req, tuple(p for p in path.split("/") if p))


def _patch_body(resource: Any, where: str) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary, or a FHIRPath Patch as its Parameters resource
    (http.html#patch, 'Patch in Batch/Transaction'; fhirpatch.html), handed to the patch interaction."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        content_type = resource.get("contentType")
        if content_type is not None and str(content_type).split(";")[0].strip() not in _JSON_PATCH_TYPES:
            raise invalid(f"{where}.resource.contentType '{content_type}' is not a JSON Patch "
                          "(application/json-patch+json)", f"{where}.resource.contentType", code="not-supported")
        data = resource.get("data")
        if not isinstance(data, str):  # base64Binary is a JSON string; b64decode raises TypeError on others
            raise invalid(f"{where}.resource.data must be a base64 string holding the JSON Patch",
                          f"{where}.resource.data", code="structure")
        try:
            # validate=True: characters outside the alphabet are an error, not silently dropped.
            return orjson.loads(base64.b64decode(data, validate=True))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise invalid(f"{where}.resource: the Binary does not hold a JSON Patch: {exc}",
                          f"{where}.resource") from None
    if resource is None:
        raise invalid(f"{where} (PATCH) has no resource: a Binary holding a JSON Patch or a Parameters "
                      "resource (FHIRPath Patch)", f"{where}.resource", code="required")
    return resource


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def response_entry(resp: FhirResponse) -> tuple[dict[str, Any], bytes | None]:
    """``entry`` fields and resource bytes for a successful answer."""
    response: dict[str, Any] = {"status": status_line(resp.status)}
    fields: dict[str, Any] = {}
    if resp.location:
        response["location"] = resp.location
        fields["fullUrl"] = resp.location.split("/_history/")[0]
    if resp.etag:
        response["etag"] = resp.etag
    if resp.last_modified:
        response["lastModified"] = resp.last_modified
    body: bytes | None = resp.body
    if body is None and resp.resource is not None:
        if resp.resource.get("resourceType") == "OperationOutcome":
            response["outcome"] = resp.resource
        else:
            body = orjson.dumps(resp.resource)
    fields["response"] = response
    return fields, body


def error_entry(err: FhirError) -> tuple[dict[str, Any], bytes | None]:
    return {"response": {"status": status_line(err.status), "outcome": err.outcome()}}, None


def response_bundle(type: str, id: str, entries: list[tuple[dict[str, Any], bytes | None]]) -> FhirResponse:
    return FhirResponse(200, body=splice_bundle({"resourceType": "Bundle", "id": id, "type": type}, entries))


def located(err: FhirError, entry: Entry) -> FhirError:
    """``err`` restated for a transaction: which entry failed, and why; the status stays the entry's."""
    prefix = f"Transaction failed at {entry.label()}: "
    issues = [replace(i, diagnostics=prefix + i.diagnostics,
                      expression=tuple(_under(e, entry) for e in i.expression) or (entry.where(),))
              for i in err.issues] or [Issue("error", "processing", prefix + err.diagnostics, (entry.where(),))]
    return FhirError(err.category, prefix + err.diagnostics, issues=issues, headers=dict(err.headers))


def _under(expression: str, entry: Entry) -> str:
    if expression.startswith("Bundle.entry["):
        return expression
    rt = entry.resource.get("resourceType") if isinstance(entry.resource, dict) else None
    if not isinstance(rt, str):  # the failure may be that resourceType is a number or a list
        rt = None
    if rt and (expression == rt or expression.startswith(rt + ".")):
        return f"{entry.where()}.resource" + expression[len(rt):]
    return f"{entry.where()}.resource.{expression}" if expression else entry.where()
