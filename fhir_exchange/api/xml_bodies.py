"""XML request and response bodies: https://hl7.org/fhir/R4/http.html#mime-type and https://hl7.org/fhir/R4/xml.html.

The router speaks JSON; XML is converted at the HTTP edge. A request body sent as ``application/fhir+xml``
(``application/xml``, ``text/xml``) is read into its JSON resource (formats/xml.py, strictly: unknown
elements are a 400, as unknown JSON properties are); an answer asked for in XML (``Accept``, ``_format``) is
rendered from the JSON the router produced, errors (OperationOutcome) included. A JSON answer that is no
resource has no XML form and goes out as JSON, labelled so.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import Response

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.fhir import jsonio
from fhir_exchange.formats import xml as fhir_xml

log = logging.getLogger("fhir_exchange")

# Bodies bigger than this are converted in a worker thread, off the event loop.
OFFLOAD_BYTES = 256 * 1024
_DROPPED = frozenset({b"content-length", b"content-type"})


def read_body(raw: bytes, definitions: Definitions) -> dict[str, Any]:
    """The JSON resource of an XML request body; a 400 OperationOutcome for XML that cannot be one."""
    try:
        body = fhir_xml.to_json(raw, fhir_xml.shapes_for(definitions), strict=True)
    except fhir_xml.XmlError as exc:
        raise FhirError(Category.INVALID, f"The body is not valid FHIR XML: {exc}", code=exc.code) from None
    try:
        # libxml2 allows 256 levels, and each repeating element adds a JSON array: the JSON may be deeper than
        # the 254 levels orjson writes (api/app.py check_depth), and could then be read but never answered.
        jsonio.dumps(body)
    except TypeError:
        raise FhirError(Category.INVALID, "The body is nested too deeply", code="too-costly") from None
    return body


async def read(raw: bytes, definitions: Definitions) -> dict[str, Any]:
    if len(raw) > OFFLOAD_BYTES:
        return await asyncio.to_thread(read_body, raw, definitions)
    return read_body(raw, definitions)


def respond(response: Response, media: str, pretty: bool, definitions: Definitions) -> Response:
    """``response`` (a JSON answer of the FHIR endpoint) with its body rendered as XML of type ``media``."""
    body = getattr(response, "body", b"")
    if not body:
        return response
    try:
        doc = jsonio.loads(body)
        content = fhir_xml.to_xml(doc, fhir_xml.shapes_for(definitions), pretty=pretty)
    except (ValueError, TypeError) as exc:  # no resource (or none XML can carry): the JSON, said to be JSON
        if isinstance(exc, fhir_xml.XmlError) and "no XML form" not in str(exc):
            log.warning("An answer could not be written as XML, sent as JSON: %s", exc)
        content, media = body, "application/fhir+json"
    out = Response(content, status_code=response.status_code, media_type=f"{media}; charset=utf-8")
    out.raw_headers.extend((k, v) for k, v in response.raw_headers if k.lower() not in _DROPPED)
    return out
