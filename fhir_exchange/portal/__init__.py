"""The web portal under /portal for institutions without a FHIR-capable EMR (docs/portal.md)."""
