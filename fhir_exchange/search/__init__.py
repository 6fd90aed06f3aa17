"""FHIR search (https://hl7.org/fhir/R4/search.html): query model, index extraction, matching."""
