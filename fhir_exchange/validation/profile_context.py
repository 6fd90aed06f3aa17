"""The state of one profile walk: https://hl7.org/fhir/R4/profiling.html and https://hl7.org/fhir/R4/validation.html#profile.

``Item``: one value of an element (its JSON value, the ``_key`` companion of a primitive, the type it
has, its path); ``ProfileContext``: the issue sink, the resource that is ``%resource`` and how
references resolve, the recursion guard and the verdicts of ``conforms`` already reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_exchange.validation.issues import IssueSink

Resolver = Callable[[str, dict[str, Any]], dict[str, Any] | None]


# Plain classes with their own __init__, not dataclasses: in the compiled build a dataclass keeps the
# interpreted __init__ that ``dataclasses`` generates (0.4 µs an Item, several per profile walk).
class Item:
    __slots__ = ("companion", "key", "path", "type_code", "value")

    def __init__(self, value: Any, companion: Any, key: str, type_code: str, path: str) -> None:
        self.value = value  # None for a primitive that has only extensions
        self.companion = companion
        self.key = key
        self.type_code = type_code
        self.path = path

    def __repr__(self) -> str:
        return f"Item({self.type_code} {self.key} at {self.path})"


class ProfileContext:
    __slots__ = ("clean", "cuts", "depth", "in_progress", "resolve", "resource", "root_of", "sink",
                 "typed_descendants", "verdicts")

    def __init__(self, sink: IssueSink, resource: dict[str, Any], resolve: Resolver,
                 root_of: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.sink = sink
        self.resource = resource
        self.resolve = resolve  # reference string, from-resource -> target resource
        self.root_of = root_of  # %rootResource of a resource
        self.depth = 0
        self.in_progress: set[tuple[int, str]] = set()
        # Verdicts of ``conforms`` on resources in this validation, by (id(resource), profile): a Bundle
        # entry is referenced by several others, and each targetProfile check walked it again. The
        # resources belong to the instance under validation, so the ids stay valid for the call.
        self.verdicts: dict[tuple[int, str], bool] = {}
        # (id(resource), profile) walks that reported nothing and were not cut: any later walk of the same
        # resource against the same profile, wherever and at whatever path, reports nothing either (a walk's
        # issues depend on the resource and the profile, its path only names them), so it is skipped.
        # A Bundle entry is walked for its meta.profile and again when another entry's targetProfile asks.
        self.clean: set[tuple[int, str]] = set()
        # How many walks were cut short (recursion guard, depth limit): a verdict reached while one was
        # cut depends on the path that led to it, so it is not remembered.
        self.cuts = 0
        # ``descendants().ofType(T)`` for the constraints, when the caller has it at hand (the
        # structural walk's references); None: the definitions' walk (the checker's own hook).
        self.typed_descendants: Callable[[list[Any], str], list[Any]] | None = None
