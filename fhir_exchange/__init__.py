"""fhir-exchange: an HL7 FHIR R4 (4.0.1) server for remote-consultation exchange between hospitals."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
