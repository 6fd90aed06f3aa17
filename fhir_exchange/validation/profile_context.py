"""The state of one profile walk: https://hl7.org/fhir/R4/profiling.html and https://hl7.org/fhir/R4/validation.html#profile.

``Item``: one value of an element (its JSON value, the ``_key`` companion of a primitive, the type it
has, its path); ``ProfileContext``: the issue sink, the resource that is ``%resource`` and how
references resolve, the recursion guard and the verdicts of ``conforms`` already reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.validation.issues import IssueSink

Resolver = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass(slots=True)
class Item:
    value: Any  # None for a primitive that has only extensions
    companion: Any
    key: str
    type_code: str
    path: str


@dataclass(slots=True)
class ProfileContext:
    sink: IssueSink
    resource: dict[str, Any]
    resolve: Resolver  # reference string, from-resource -> target resource
    root_of: Callable[[dict[str, Any]], dict[str, Any]]  # %rootResource of a resource
    depth: int = 0
    in_progress: set[tuple[int, str]] = field(default_factory=set)
    # Verdicts of ``conforms`` on resources in this validation, by (id(resource), profile): a Bundle
    # entry is referenced by several others, and each targetProfile check walked it again. The
    # resources belong to the instance under validation, so the ids stay valid for the call.
    verdicts: dict[tuple[int, str], bool] = field(default_factory=dict)
    # (id(resource), profile) walks that reported nothing and were not cut: any later walk of the same
    # resource against the same profile, wherever and at whatever path, reports nothing either (a walk's
    # issues depend on the resource and the profile, its path only names them), so it is skipped.
    # A Bundle entry is walked for its meta.profile and again when another entry's targetProfile asks.
    clean: set[tuple[int, str]] = field(default_factory=set)
    # How many walks were cut short (recursion guard, depth limit): a verdict reached while one was
    # cut depends on the path that led to it, so it is not remembered.
    cuts: int = 0
