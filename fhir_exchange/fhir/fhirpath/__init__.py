"""FHIRPath http://hl7.org/fhirpath/N1/ as profiled by FHIR R4 https://hl7.org/fhir/R4/fhirpath.html: the
server's one FHIRPath engine. Callers import from here; the modules of the package are its parts
(``engine``: parsing, preparation and the fhirpathpy glue; ``functions``: the function and operator
table; ``values``: value semantics; ``check``: the static checker; ``errors``; ``html``)."""

from fhir_exchange.fhir.fhirpath.engine import (
    CompiledPath,
    ConformsTo,
    FhirPathError,
    FhirPathEvaluationError,
    FhirPathSemanticError,
    FhirPathSyntaxError,
    MemberOf,
    Quantity,
    Resolver,
    Temporal,
    Tracer,
    TypedValue,
    compile,
    constraint_holds,
    evaluate,
    is_true,
)

__all__ = [
    "CompiledPath",
    "ConformsTo",
    "FhirPathError",
    "FhirPathEvaluationError",
    "FhirPathSemanticError",
    "FhirPathSyntaxError",
    "MemberOf",
    "Quantity",
    "Resolver",
    "Temporal",
    "Tracer",
    "TypedValue",
    "compile",
    "constraint_holds",
    "evaluate",
    "is_true",
]
