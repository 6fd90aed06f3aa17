"""The validator: https://hl7.org/fhir/R4/validation.html.

``Validator(definitions).validate(resource, profiles=..., resource_type=...)`` checks a parsed JSON
resource against its resource type's core StructureDefinition (structure, cardinality, primitive
formats, bindings) and returns OperationOutcome issues, sorted, without duplicates. Profiles given
by the caller are reported when the server does not know them (a warning, as HAPI FHIR and Firely
Server do for unknown ``meta.profile`` entries: the resource may still be valid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.shapes import ShapeBuilder
from fhir_exchange.validation.structure import StructureWalker
from fhir_exchange.validation.terminology import Terminology


class Validator:
    """Validates resources against the definitions it was built with; safe to share between threads."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.terminology = Terminology(definitions)
        self.shapes = ShapeBuilder(definitions)
        self.structure = StructureWalker(self.shapes, self.terminology)

    def validate(self, resource: dict[str, Any], *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]:
        sink = IssueSink()
        self.structure.validate_resource(resource, "", sink, expected_type=resource_type)
        for url in profiles:
            if self.definitions.resolve(url) is None:
                sink.warning("not-found", MsgId.PROFILE_UNKNOWN,
                             f"Profile {url} is not known to this server; not checked", None)
        return sink.result()
