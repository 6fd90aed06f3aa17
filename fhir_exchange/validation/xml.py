"""FHIR XML → JSON for definitions published as XML: https://hl7.org/fhir/R4/xml.html.

Validator test profiles and some IGs are published as XML. The converter is the server's own XML
reader (fhir_exchange/formats/xml.py), run leniently: content the JSON cannot hold is skipped, as
loading always has, instead of refusing the definition. DOCTYPE and entity declarations are refused.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.formats.xml import XHTML_NS, to_json
from fhir_exchange.validation.shapes import ShapeBuilder

FHIR_NS = "{http://hl7.org/fhir}"
__all__ = ["FHIR_NS", "XHTML_NS", "parse_xml_resource"]


def parse_xml_resource(text: str | bytes, shapes: ShapeBuilder) -> dict[str, Any]:
    """The JSON form of an XML resource (raises ``ValueError``, :class:`~fhir_exchange.formats.xml.XmlError`,
    on XML that is not well-formed or declares a DOCTYPE)."""
    return to_json(text, shapes, strict=False)
