"""Validation issues: https://hl7.org/fhir/R4/operationoutcome.html and https://hl7.org/fhir/R4/valueset-issue-type.html.

Every rule has a stable message id (``MsgId``), so clients and tests can tell issues apart without
parsing diagnostics. The sink removes duplicates (the same rule on the same element reported by two
passes, e.g. the core definition and a profile) and sorts: errors first, then by expression.
"""

from __future__ import annotations

from fhir_exchange.errors import Issue

SEVERITY_RANK = {"fatal": 0, "error": 1, "warning": 2, "information": 3}


class MsgId:
    """Stable rule identifiers (OperationOutcome.issue.details.coding.code)."""

    # JSON shape (json.html)
    NOT_OBJECT = "json-not-object"
    RESOURCE_TYPE_MISSING = "json-resourcetype-missing"
    RESOURCE_TYPE_UNKNOWN = "json-resourcetype-unknown"
    RESOURCE_TYPE_MISMATCH = "json-resourcetype-mismatch"
    UNKNOWN_ELEMENT = "json-unknown-element"
    ARRAY_EXPECTED = "json-array-expected"
    ARRAY_UNEXPECTED = "json-array-unexpected"
    EMPTY_ARRAY = "json-empty-array"
    EMPTY_OBJECT = "json-empty-object"
    NULL_VALUE = "json-null"
    OBJECT_EXPECTED = "json-object-expected"
    PRIMITIVE_EXPECTED = "json-primitive-expected"
    COMPANION_MISALIGNED = "json-primitive-companion-misaligned"
    CHOICE_MULTIPLE = "json-choice-multiple"
    # primitives (datatypes.html)
    PRIMITIVE_JSON_TYPE = "primitive-json-type"
    PRIMITIVE_FORMAT = "primitive-format"
    PRIMITIVE_RANGE = "primitive-range"
    PRIMITIVE_EMPTY = "primitive-empty"
    PRIMITIVE_TOO_LONG = "primitive-too-long"
    PRIMITIVE_WHITESPACE = "primitive-whitespace"
    ID_FORMAT = "resource-id-format"
    # structure (profiling.html)
    CARDINALITY_MIN = "sd-cardinality-min"
    CARDINALITY_MAX = "sd-cardinality-max"
    TYPE_NOT_ALLOWED = "sd-type-not-allowed"
    FIXED_MISMATCH = "sd-fixed-mismatch"
    PATTERN_MISMATCH = "sd-pattern-mismatch"
    MIN_VALUE = "sd-min-value"
    MAX_VALUE = "sd-max-value"
    MAX_LENGTH = "sd-max-length"
    SLICE_CLOSED = "sd-slicing-closed"
    SLICE_ORDER = "sd-slicing-order"
    SLICE_AMBIGUOUS = "sd-slicing-ambiguous"
    PROFILE_UNKNOWN = "sd-profile-unknown"
    PROFILE_UNUSABLE = "sd-profile-unusable"
    # extensions (extensibility.html)
    EXTENSION_URL_MISSING = "ext-url-missing"
    EXTENSION_VALUE_AND_CHILDREN = "ext-value-and-children"
    EXTENSION_EMPTY = "ext-no-value-or-children"
    EXTENSION_UNKNOWN = "ext-unknown"
    MODIFIER_EXTENSION_UNKNOWN = "ext-modifier-unknown"
    EXTENSION_CONTEXT = "ext-context"
    EXTENSION_URL_FORMAT = "ext-url-format"
    # terminology (terminologies.html)
    CODE_NOT_IN_VALUESET = "tx-code-not-in-valueset"
    CODE_NOT_IN_VALUESET_EXTENSIBLE = "tx-code-not-in-valueset-extensible"
    CODE_UNVERIFIED = "tx-code-unverified"
    CODE_MISSING = "tx-code-missing"
    VALUESET_UNKNOWN = "tx-valueset-unknown"
    CODE_UNKNOWN_IN_SYSTEM = "tx-code-unknown-in-system"
    # invariants and references
    INVARIANT = "sd-invariant"
    INVARIANT_UNEVALUATED = "sd-invariant-not-evaluated"
    REFERENCE_TARGET_TYPE = "ref-target-type"
    REFERENCE_FORMAT = "ref-format"
    REFERENCE_UNRESOLVED_CONTAINED = "ref-contained-unresolved"
    CONTAINED_NOT_REFERENCED = "contained-not-referenced"
    BUNDLE_DUPLICATE = "bundle-duplicate-fullurl"
    XHTML = "xhtml-content"
    MARKDOWN_HTML = "markdown-raw-html"
    VITAL_SIGNS = "obs-vital-signs-profile"


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
        self._issues.append(Issue(severity, code, diagnostics, expr, message_id))

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
