"""Content negotiation (https://hl7.org/fhir/R4/http.html#mime-type): JSON only, for now.

``_format`` wins over ``Accept``. XML is refused with 415 (request bodies) or 406 (responses) and an
OperationOutcome, rather than being answered with JSON the client did not ask for.
"""

from __future__ import annotations

from fhir_exchange.errors import Category, FhirError

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "text/json"})
XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"})
FORMAT_ALIASES = {"json": FHIR_JSON, "xml": "application/fhir+xml", "html": "text/html", "ttl": "text/turtle"}


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def response_type(format_param: str | None, accept: str | None) -> str:
    """The media type of the response body."""
    if format_param:
        media = FORMAT_ALIASES.get(format_param.strip().lower(), _media(format_param.replace(" ", "+")))
        if media in JSON_TYPES:
            return "application/json" if media == "application/json" else FHIR_JSON
        raise FhirError(Category.NOT_ACCEPTABLE, f"_format '{format_param}' is not supported: use json",
                        ("_format",), code="not-supported")
    if not accept:
        return FHIR_JSON
    ranges = [_media(a) for a in accept.split(",") if a.strip()]
    for m in ranges:
        if m in ("application/fhir+json", "application/json+fhir"):
            return FHIR_JSON
        if m in ("application/json", "text/json"):
            return "application/json"
        if m in ("*/*", "application/*", "text/*") or m.endswith("+json"):
            return FHIR_JSON
    if ranges and all(m in XML_TYPES or m == "text/html" for m in ranges):
        raise FhirError(Category.NOT_ACCEPTABLE, f"Accept '{accept}' is not supported: this server speaks JSON",
                        ("Accept",), code="not-supported")
    return FHIR_JSON


def request_kind(content_type: str | None, method: str) -> str:
    """``json``, ``json-patch`` or ``form`` for a request body's Content-Type; raises 415 otherwise."""
    if not content_type:
        return "json"
    media = _media(content_type)
    if media in JSON_TYPES:
        return "json"
    if media == "application/json-patch+json":
        if method != "PATCH":
            raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, "JSON Patch bodies are accepted only with PATCH",
                            ("Content-Type",), code="not-supported")
        return "json-patch"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media in XML_TYPES:
        raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, "XML is not supported yet: send application/fhir+json",
                        ("Content-Type",), code="not-supported")
    if media == "application/fhir+json-patch":
        return "json-patch"
    raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, f"Unsupported Content-Type '{content_type}'",
                    ("Content-Type",), code="not-supported")
