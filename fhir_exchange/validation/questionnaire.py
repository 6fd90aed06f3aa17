"""QuestionnaireResponse against its Questionnaire: https://hl7.org/fhir/R4/questionnaireresponse.html#link."""

from __future__ import annotations

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.structure import Visited
from fhir_exchange.validation.terminology import Terminology


class QuestionnaireChecker:
    def __init__(self, definitions: Definitions, terminology: Terminology) -> None:
        self.defs = definitions
        self.tx = terminology

    def check(self, resources: list[Visited], sink: IssueSink) -> None:
        return None
