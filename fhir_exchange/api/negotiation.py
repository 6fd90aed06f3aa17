"""Content negotiation (https://hl7.org/fhir/R4/http.html#mime-type): JSON and XML.

``_format`` wins over ``Accept``; ``Accept`` ranges are taken in the order of their quality (``q``).
XML (formats/xml.py) is answered as ``application/fhir+xml`` (``application/xml`` and ``text/xml`` when
asked by those names) and read from request bodies of those types. Anything else (``text/html``,
Turtle) is refused with 406 or 415 and an OperationOutcome, rather than being answered with JSON the
client did not ask for.
"""

from __future__ import annotations

from fhir_exchange.errors import Category, FhirError

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "text/json"})
XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"})
FORMAT_ALIASES = {"json": FHIR_JSON, "xml": "application/fhir+xml", "html": "text/html", "ttl": "text/turtle"}


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def response_type(format_param: str | None, accept: str | None, content_type: str | None = None) -> str:
    """The media type of the response body. Without ``_format`` and with no Accept that names a type, an XML
    request is answered in XML (http.html#mime-type: the client's format is the sensible default)."""
    if format_param:
        media = FORMAT_ALIASES.get(format_param.strip().lower(), _media(format_param.replace(" ", "+")))
        if media in JSON_TYPES:
            return "application/json" if media == "application/json" else FHIR_JSON
        if media in XML_TYPES:
            return _xml_answer(media)
        raise FhirError(Category.NOT_ACCEPTABLE, f"_format '{format_param}' is not supported: use json or xml",
                        ("_format",), code="not-supported")
    if content_type and _media(content_type) in XML_TYPES and (
            not accept or all(m in ("*/*", "application/*", "text/*") for m in _by_quality(accept))):
        return _xml_answer(_media(content_type))
    if not accept:
        return FHIR_JSON
    ranges = _by_quality(accept)
    for m in ranges:
        if m in ("application/fhir+json", "application/json+fhir"):
            return FHIR_JSON
        if m in ("application/json", "text/json"):
            return "application/json"
        if m in XML_TYPES:
            return _xml_answer(m)
        if m in ("*/*", "application/*", "text/*") or m.endswith("+json"):
            return FHIR_JSON
        if m.endswith("+xml") and m != "application/xhtml+xml":
            return FHIR_XML
    if ranges and all(m == "text/html" or m == "application/xhtml+xml" for m in ranges):
        raise FhirError(Category.NOT_ACCEPTABLE, f"Accept '{accept}' is not supported: this server speaks JSON "
                        "and XML", ("Accept",), code="not-supported")
    return FHIR_JSON


def is_xml(media: str) -> bool:
    """Whether a media type :func:`response_type` chose is one of the XML ones."""
    return media in XML_TYPES


def _xml_answer(media: str) -> str:
    return media if media in ("application/xml", "text/xml") else FHIR_XML


def _by_quality(accept: str) -> list[str]:
    """The media ranges of an Accept header, best quality first (ties keep their order), q=0 left out."""
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(a for a in accept.split(",") if a.strip()):
        q = 1.0
        for param in item.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 1.0
        if q > 0:
            ranked.append((-q, i, _media(item)))
    return [m for _q, _i, m in sorted(ranked)]


def request_kind(content_type: str | None, method: str) -> str:
    """``json``, ``xml``, ``json-patch`` or ``form`` for a request body's Content-Type; raises 415 otherwise."""
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
    if media in XML_TYPES:  # with PATCH: a FHIRPath Patch Parameters in XML (XML Patch is not supported)
        return "xml"
    if media == "application/fhir+json-patch":
        return "json-patch"
    raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, f"Unsupported Content-Type '{content_type}'",
                    ("Content-Type",), code="not-supported")
