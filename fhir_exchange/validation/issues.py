"""Validation issues: https://hl7.org/fhir/R4/operationoutcome.html and https://hl7.org/fhir/R4/valueset-issue-type.html.

Every rule has a stable message id (``MsgId``), so clients and tests can tell issues apart without
parsing diagnostics. The sink removes duplicates (the same rule on the same element reported by two
passes, e.g. the core definition and a profile) and sorts: errors first, then by expression.
"""

from __future__ import annotations

from typing import Final

from fhir_exchange.errors import Issue

SEVERITY_RANK: Final = {"fatal": 0, "error": 1, "warning": 2, "information": 3}

_NEW: Final = object.__new__
_SET: Final = object.__setattr__  # Issue is frozen: its own __setattr__ refuses


def new_issue(severity: str, code: str, diagnostics: str, expression: tuple[str, ...],
              message_id: str | None) -> Issue:
    """``Issue(severity, code, diagnostics, expression, message_id)`` without the interpreted
    ``__init__`` that ``dataclasses`` generates for a frozen class (one ``object.__setattr__`` per
    field from bytecode: the most expensive part of reporting an issue in the compiled build)."""
    issue: Issue = _NEW(Issue)
    _SET(issue, "severity", severity)
    _SET(issue, "code", code)
    _SET(issue, "diagnostics", diagnostics)
    _SET(issue, "expression", expression)
    _SET(issue, "message_id", message_id)
    return issue


class MsgId:
    """Stable rule identifiers (OperationOutcome.issue.details.coding.code)."""

    # JSON shape (json.html)
    NOT_OBJECT: Final = "json-not-object"
    RESOURCE_TYPE_MISSING: Final = "json-resourcetype-missing"
    RESOURCE_TYPE_UNKNOWN: Final = "json-resourcetype-unknown"
    RESOURCE_TYPE_MISMATCH: Final = "json-resourcetype-mismatch"
    UNKNOWN_ELEMENT: Final = "json-unknown-element"
    ARRAY_EXPECTED: Final = "json-array-expected"
    ARRAY_UNEXPECTED: Final = "json-array-unexpected"
    EMPTY_ARRAY: Final = "json-empty-array"
    EMPTY_OBJECT: Final = "json-empty-object"
    NULL_VALUE: Final = "json-null"
    OBJECT_EXPECTED: Final = "json-object-expected"
    PRIMITIVE_EXPECTED: Final = "json-primitive-expected"
    COMPANION_MISALIGNED: Final = "json-primitive-companion-misaligned"
    CHOICE_MULTIPLE: Final = "json-choice-multiple"
    # primitives (datatypes.html)
    PRIMITIVE_JSON_TYPE: Final = "primitive-json-type"
    PRIMITIVE_FORMAT: Final = "primitive-format"
    PRIMITIVE_RANGE: Final = "primitive-range"
    PRIMITIVE_EMPTY: Final = "primitive-empty"
    PRIMITIVE_TOO_LONG: Final = "primitive-too-long"
    PRIMITIVE_WHITESPACE: Final = "primitive-whitespace"
    ID_FORMAT: Final = "resource-id-format"
    # structure (profiling.html)
    CARDINALITY_MIN: Final = "sd-cardinality-min"
    CARDINALITY_MAX: Final = "sd-cardinality-max"
    TYPE_NOT_ALLOWED: Final = "sd-type-not-allowed"
    FIXED_MISMATCH: Final = "sd-fixed-mismatch"
    PATTERN_MISMATCH: Final = "sd-pattern-mismatch"
    MIN_VALUE: Final = "sd-min-value"
    MAX_VALUE: Final = "sd-max-value"
    MAX_LENGTH: Final = "sd-max-length"
    SLICE_CLOSED: Final = "sd-slicing-closed"
    SLICE_ORDER: Final = "sd-slicing-order"
    SLICE_AMBIGUOUS: Final = "sd-slicing-ambiguous"
    PROFILE_UNKNOWN: Final = "sd-profile-unknown"
    PROFILE_UNUSABLE: Final = "sd-profile-unusable"
    # extensions (extensibility.html)
    EXTENSION_URL_MISSING: Final = "ext-url-missing"
    EXTENSION_VALUE_AND_CHILDREN: Final = "ext-value-and-children"
    EXTENSION_EMPTY: Final = "ext-no-value-or-children"
    EXTENSION_UNKNOWN: Final = "ext-unknown"
    MODIFIER_EXTENSION_UNKNOWN: Final = "ext-modifier-unknown"
    EXTENSION_CONTEXT: Final = "ext-context"
    EXTENSION_URL_FORMAT: Final = "ext-url-format"
    # terminology (terminologies.html)
    CODE_NOT_IN_VALUESET: Final = "tx-code-not-in-valueset"
    CODE_NOT_IN_VALUESET_EXTENSIBLE: Final = "tx-code-not-in-valueset-extensible"
    CODE_UNVERIFIED: Final = "tx-code-unverified"
    CODE_MISSING: Final = "tx-code-missing"
    VALUESET_UNKNOWN: Final = "tx-valueset-unknown"
    CODE_UNKNOWN_IN_SYSTEM: Final = "tx-code-unknown-in-system"
    # invariants and references
    INVARIANT: Final = "sd-invariant"
    INVARIANT_UNEVALUATED: Final = "sd-invariant-not-evaluated"
    REFERENCE_TARGET_TYPE: Final = "ref-target-type"
    REFERENCE_FORMAT: Final = "ref-format"
    REFERENCE_UNRESOLVED_CONTAINED: Final = "ref-contained-unresolved"
    CONTAINED_NOT_REFERENCED: Final = "contained-not-referenced"
    BUNDLE_DUPLICATE: Final = "bundle-duplicate-fullurl"
    XHTML: Final = "xhtml-content"
    MARKDOWN_HTML: Final = "markdown-raw-html"
    VITAL_SIGNS: Final = "obs-vital-signs-profile"


class IssueSink:
    """Collects issues of one validation run."""

    __slots__ = ("_issues", "_seen", "attempts")

    def __init__(self) -> None:
        self._issues: list[Issue] = []
        self._seen: set[tuple[str, str, str, tuple[str, ...]]] = set()
        # Every add(), kept or not (a duplicate, or dropped later by truncate): a pass that leaves it
        # unchanged reported nothing at all, wherever it ran (see ProfileValidator.validate_resource).
        self.attempts = 0

    def add(self, severity: str, code: str, message_id: str, diagnostics: str, expression: str | None) -> None:
        self.attempts += 1
        expr = (expression,) if expression else ()
        key = (severity, message_id, diagnostics, expr)
        if key in self._seen:
            return
        self._seen.add(key)
        self._issues.append(new_issue(severity, code, diagnostics, expr, message_id))

    def error(self, code: str, message_id: str, diagnostics: str, expression: str | None) -> None:
        self.add("error", code, message_id, diagnostics, expression)

    def warning(self, code: str, message_id: str, diagnostics: str, expression: str | None) -> None:
        self.add("warning", code, message_id, diagnostics, expression)

    def info(self, code: str, message_id: str, diagnostics: str, expression: str | None) -> None:
        self.add("information", code, message_id, diagnostics, expression)

    def has_errors(self) -> bool:
        return any(i.severity in ("error", "fatal") for i in self._issues)

    def mark(self) -> int:
        return len(self._issues)

    def since(self, mark: int) -> list[Issue]:
        return self._issues[mark:]

    def truncate(self, mark: int) -> list[Issue]:
        """Drop (and return) issues added after ``mark``: slice matching tries a candidate silently."""
        dropped = self._issues[mark:]
        del self._issues[mark:]
        for i in dropped:
            self._seen.discard((i.severity, i.message_id or "", i.diagnostics, i.expression))
        return dropped

    def extend(self, issues: list[Issue]) -> None:
        for i in issues:
            self.add(i.severity, i.code, i.message_id or "", i.diagnostics, i.expression[0] if i.expression else None)

    def result(self) -> list[Issue]:
        if not self._issues:
            return []
        return sorted(self._issues, key=sort_key)


def sort_key(i: Issue) -> tuple[int, tuple[str, ...], str, str]:
    return (SEVERITY_RANK.get(i.severity, 9), i.expression, i.message_id or "", i.diagnostics)
