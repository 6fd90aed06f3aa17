"""Defensive access to client JSON: https://hl7.org/fhir/R4/json.html.

The passes after the structural walk read the same client JSON; when it is malformed the walk has
reported it, and these helpers let the later passes skip what is not shaped as expected instead of
failing on it.
"""

from __future__ import annotations

from typing import Any


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON array (anything else in it, or a non-array, is skipped)."""
    return [v for v in value if type(v) is dict] if type(value) is list else []
