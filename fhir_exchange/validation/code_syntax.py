"""The lexical form of codes of external code systems: https://hl7.org/fhir/R4/terminologies-systems.html.

Some code systems are too large, or not distributable, to expand locally (ISO 3166, LOINC, BCP-47
language tags...), so membership of their codes is not decidable here. Their codes nevertheless
have a fixed syntax, published with the system: a value that does not have it is certainly not one
of their codes ("Australia" is not an ISO 3166 code; "AU" may be). Systems whose codes have no
such syntax (SNOMED CT allows expressions) are not listed.
"""

from __future__ import annotations

import re

SYNTAX: dict[str, re.Pattern[str]] = {
    # ISO 3166-1 alpha-2, alpha-3 and numeric country codes
    "urn:iso:std:iso:3166": re.compile(r"[A-Z]{2}|[A-Z]{3}|[0-9]{3}"),
    # ISO 3166-2 subdivision codes: country, hyphen, up to three letters or digits
    "urn:iso:std:iso:3166:-2": re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}"),
    # UN M49 area and region codes: three digits
    "http://unstats.un.org/unsd/methods/m49/m49.htm": re.compile(r"[0-9]{3}"),
    # ISO 4217 currency codes
    "urn:iso:std:iso:4217": re.compile(r"[A-Z]{3}"),
    # LOINC codes (with their check digit), parts (LP), answers (LA) and groups (LG)
    "http://loinc.org": re.compile(r"[0-9]{1,7}-[0-9]|L[APG][0-9]{1,9}-[0-9]"),
    # BCP-47 language tags (RFC 5646, simplified: subtags of letters and digits)
    "urn:ietf:bcp:47": re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*"),
}


def plausible(system: str, code: str) -> bool | None:
    """False when ``code`` cannot be a code of ``system``; None when the syntax is not known."""
    pattern = SYNTAX.get(system)
    if pattern is None:
        return None
    return pattern.fullmatch(code) is not None
