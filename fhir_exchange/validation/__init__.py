"""Validation of FHIR resources against StructureDefinitions: https://hl7.org/fhir/R4/validation.html."""

from fhir_exchange.validation.validator import Validator

__all__ = ["Validator"]
