"""Conformance resources (StructureDefinition, SearchParameter, ValueSet, ...) loaded from FHIR NPM packages."""

from fhir_exchange.definitions.definitions import Definitions
from fhir_exchange.definitions.package import Package, load_package

__all__ = ["Definitions", "Package", "load_package"]
