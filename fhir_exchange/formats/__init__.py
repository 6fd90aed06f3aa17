"""Wire formats of FHIR resources other than JSON: https://hl7.org/fhir/R4/formats.html."""
