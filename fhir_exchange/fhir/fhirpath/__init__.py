"""FHIRPath http://hl7.org/fhirpath/N1/ as profiled by FHIR R4 https://hl7.org/fhir/R4/fhirpath.html: the
server's one FHIRPath engine. Callers import from here; the modules of the package are its parts:

* ``engine``: :class:`CompiledPath` and the fhirpathpy glue; ``parser``: strict parsing and AST
  preparation; ``check``: the static checker (strict mode); ``errors``;
* ``table``: the function and operator table, assembled from one module per spec section:
  ``operators`` (equality, comparison, boolean logic), ``arithmetic`` (math and date/time
  operators), ``collection_functions`` (existence, filtering, subsetting, combining, tree
  navigation, ``|``/``in``/``contains``), ``type_functions``, ``conversions``, ``strings``,
  ``math_functions``, ``boundaries``, ``utility`` (trace, now), ``fhir_functions`` (FHIR's
  additions; ``html`` for ``htmlChecks()``), on the shared ``items`` (singletons, logical items)
  and ``environment`` (per-call resources and hooks);
* values: ``values`` (System types, typing of FHIR items), ``numbers``, ``temporal``,
  ``quantity``, ``equality`` (=, ~, ordering of items), and ``ucum``, the server's one UCUM
  implementation (``canonical(code)``, ``compare_quantities(...)``);
* ``compiled*``: the compiled back-end (built from ``CompiledPath.ast``/``.constants``).
"""

from fhir_exchange.fhir.fhirpath.engine import (
    CompiledPath,
    ConformsTo,
    FhirPathError,
    FhirPathEvaluationError,
    FhirPathSemanticError,
    FhirPathSyntaxError,
    MemberOf,
    Resolver,
    Tracer,
    TypedValue,
    compile,
    constraint_holds,
    evaluate,
    is_true,
)
from fhir_exchange.fhir.fhirpath.quantity import Quantity
from fhir_exchange.fhir.fhirpath.temporal import Temporal

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
