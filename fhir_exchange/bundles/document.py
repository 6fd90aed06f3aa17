"""documents: https://hl7.org/fhir/R4/bundle.html (bdl-9, bdl-10, bdl-11) and
https://hl7.org/fhir/R4/documents.html

A ``document`` Bundle is stored with ``POST [base]/Bundle`` (or PUT) like any resource; before it is
written it must carry an identifier with system and value (bdl-9), a timestamp (bdl-10) and a
Composition as its first entry (bdl-11). The rule is a write rule for the ``Bundle`` type
(:attr:`Hooks.rules`), so the one write path applies it whatever the route (create, update, entries).
The validator may report the same invariants; the rule keeps them enforced whatever profile is used.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import Issue


def document_rules(bundle: dict[str, Any]) -> list[Issue]:
    if bundle.get("type") != "document":
        return []
    issues: list[Issue] = []
    ident = bundle.get("identifier")
    if not isinstance(ident, dict) or not ident.get("system") or not ident.get("value"):
        issues.append(Issue("error", "invariant", "bdl-9: A document must have an identifier with a system and a value",
                            ("Bundle.identifier",), "bdl-9"))
    if not bundle.get("timestamp"):
        issues.append(Issue("error", "invariant", "bdl-10: A document must have a date (Bundle.timestamp)",
                            ("Bundle.timestamp",), "bdl-10"))
    entries = bundle.get("entry")
    first = entries[0] if isinstance(entries, list) and entries else None
    resource = first.get("resource") if isinstance(first, dict) else None
    if not isinstance(resource, dict) or resource.get("resourceType") != "Composition":
        issues.append(Issue("error", "invariant", "bdl-11: A document must have a Composition as the first resource",
                            ("Bundle.entry[0].resource",), "bdl-11"))
    return issues

