"""Errors raised by the FHIRPath layer (http://hl7.org/fhirpath/N1/#errors).

Kept in their own module so the helper modules (values, functions) and the public
:mod:`fhir_exchange.fhir.fhirpath` module can all raise them without import cycles. They are
deliberately *not* :class:`fhir_exchange.errors.FhirError`: whether a broken expression is the
client's fault (a ``_filter`` parameter) or ours (a core invariant) is for the caller to decide.
"""

from __future__ import annotations


class FhirPathError(Exception):
    """Any failure to compile or evaluate a FHIRPath expression."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message if expression is None else f"{message} (in: {expression})")
        self.message = message
        self.expression = expression


class FhirPathSyntaxError(FhirPathError):
    """The expression does not parse, or names a function or type that does not exist."""


class FhirPathEvaluationError(FhirPathError):
    """The expression parsed but failed while running (wrong types, singleton expected, ...)."""


class FhirPathSemanticError(FhirPathError):
    """``CompiledPath.check()`` found the expression wrong for the FHIR model (strict mode)."""
