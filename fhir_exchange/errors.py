"""The one error family of the server.

Errors are values: every failure a client can cause is a :class:`FhirError` carrying a
:class:`Category` and one or more OperationOutcome issues. The HTTP status of each category lives in
exactly one table, :data:`HTTP_STATUS`; the api layer is the only place that reads it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class Category(enum.Enum):
    INVALID = "invalid"
    UNPROCESSABLE = "unprocessable"
    NOT_FOUND = "not-found"
    GONE = "gone"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    PRECONDITION_FAILED = "precondition-failed"
    NOT_ALLOWED = "not-allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    NOT_ACCEPTABLE = "not-acceptable"
    TOO_LARGE = "too-large"
    TOO_MANY_REQUESTS = "too-many-requests"
    NOT_IMPLEMENTED = "not-implemented"
    TRANSIENT = "transient"
    FAULT = "fault"


HTTP_STATUS: dict[Category, int] = {
    Category.INVALID: 400,
    Category.UNAUTHORIZED: 401,
    Category.FORBIDDEN: 403,
    Category.NOT_FOUND: 404,
    Category.NOT_ALLOWED: 405,
    Category.NOT_ACCEPTABLE: 406,
    Category.CONFLICT: 409,
    Category.GONE: 410,
    Category.PRECONDITION_FAILED: 412,
    Category.TOO_LARGE: 413,
    Category.UNSUPPORTED_MEDIA_TYPE: 415,
    Category.TOO_MANY_REQUESTS: 429,
    Category.UNPROCESSABLE: 422,
    Category.FAULT: 500,
    Category.NOT_IMPLEMENTED: 501,
    Category.TRANSIENT: 503,
}

# OperationOutcome.issue.code (http://hl7.org/fhir/issue-type) used when an issue does not name one.
DEFAULT_ISSUE_CODE: dict[Category, str] = {
    Category.INVALID: "invalid",
    Category.UNPROCESSABLE: "processing",
    Category.NOT_FOUND: "not-found",
    Category.GONE: "deleted",
    Category.CONFLICT: "conflict",
    Category.FORBIDDEN: "forbidden",
    Category.UNAUTHORIZED: "login",
    Category.PRECONDITION_FAILED: "conflict",
    Category.NOT_ALLOWED: "not-supported",
    Category.UNSUPPORTED_MEDIA_TYPE: "not-supported",
    Category.NOT_ACCEPTABLE: "not-supported",
    Category.TOO_LARGE: "too-costly",
    Category.TOO_MANY_REQUESTS: "throttled",
    Category.NOT_IMPLEMENTED: "not-supported",
    Category.TRANSIENT: "transient",
    Category.FAULT: "exception",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue."""

    severity: str  # fatal | error | warning | information
    code: str  # http://hl7.org/fhir/issue-type
    diagnostics: str
    expression: tuple[str, ...] = ()
    message_id: str | None = None  # stable id of the rule, e.g. "sd-cardinality-min"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "code": self.code}
        if self.message_id:
            out["details"] = {
                "coding": [
                    {"system": "urn:fhir-exchange:message-id", "code": self.message_id}
                ],
                "text": self.diagnostics,
            }
        out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass(slots=True)
class FhirError(Exception):
    """A failure with a category; rendered as an OperationOutcome by the api layer."""

    category: Category
    diagnostics: str
    expression: Sequence[str] = ()
    code: str | None = None
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.diagnostics)
        # One expression given as a plain string is wrapped, never iterated into single characters.
        self.expression = (self.expression,) if isinstance(self.expression, str) else tuple(self.expression)
        if not self.issues:
            self.issues = [
                Issue(
                    severity="error" if self.category is not Category.FAULT else "fatal",
                    code=self.code or DEFAULT_ISSUE_CODE[self.category],
                    diagnostics=self.diagnostics,
                    expression=tuple(self.expression),
                )
            ]

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.category]

    def outcome(self) -> dict[str, object]:
        return operation_outcome(self.issues)


def operation_outcome(issues: Sequence[Issue]) -> dict[str, object]:
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def invalid(diagnostics: str, *expression: str, code: str = "invalid") -> FhirError:
    return FhirError(Category.INVALID, diagnostics, expression, code=code)


def not_found(diagnostics: str) -> FhirError:
    return FhirError(Category.NOT_FOUND, diagnostics)


def gone(diagnostics: str) -> FhirError:
    return FhirError(Category.GONE, diagnostics)


def conflict(diagnostics: str) -> FhirError:
    return FhirError(Category.CONFLICT, diagnostics)


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError(Category.PRECONDITION_FAILED, diagnostics)


def transient(diagnostics: str, retry_after: int = 5) -> FhirError:
    return FhirError(Category.TRANSIENT, diagnostics, headers={"Retry-After": str(retry_after)})


class TransactionConflict(FhirError):
    """A store transaction lost a race and wrote nothing: the whole request may run again (the server
    does so a few times, as MongoDB's ``with_transaction`` does, before answering 503)."""

    def __init__(self, diagnostics: str, retry_after: int = 1) -> None:
        super().__init__(Category.TRANSIENT, diagnostics, headers={"Retry-After": str(retry_after)})
