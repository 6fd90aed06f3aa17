"""Input parameters of an operation: https://hl7.org/fhir/R4/operations.html#request

An idempotent operation takes its parameters as the query (``GET``, or ``POST`` with a query) or as a
``Parameters`` body (``POST``); both are read into one map, and a name given twice with different values
is a 400 (contradictory input is never silently resolved). Complex values (``coding``,
``codeableConcept``) and resources (``valueSet``, ``codeSystem``, ``conceptMap``) come only in a body,
except that a ``coding`` in the query may be written ``system|code`` as a token. :func:`operand` finds
the conformance resource an operation works on (instance, ``url`` parameter or inline resource).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import Category, FhirError, invalid, not_found
from fhir_exchange.interactions.common import check_id
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest

# Query parameters that are not operation inputs (results formatting).
_FORMAT = frozenset({"_format", "_pretty", "_summary", "_elements"})


class OperationParameters:
    def __init__(self, req: FhirRequest, operation: str) -> None:
        self.operation = operation
        self._values: dict[str, list[Any]] = {}
        for name, text in req.query:
            if name not in _FORMAT:
                self._values.setdefault(name, []).append(text)
        body = req.body
        if req.method == "POST" and body is not None:
            if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
                raise invalid(f"${operation} takes a Parameters resource as its body")
            params = body.get("parameter")
            for p in params if isinstance(params, list) else []:
                if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                    raise invalid(f"${operation}: every parameter needs a name", "Parameters.parameter")
                value: Any = p.get("resource")
                if value is None:
                    value = next((v for k, v in p.items() if k.startswith("value")), None)
                if value is None and "part" in p:
                    value = p["part"]
                self._values.setdefault(p["name"], []).append(value)

    def has(self, name: str) -> bool:
        return name in self._values

    def _one(self, name: str) -> Any:
        values = self._values.get(name)
        if not values:
            return None
        first = values[0]
        if any(v != first for v in values[1:]):
            raise invalid(f"${self.operation}: the parameter '{name}' is given more than once with different "
                          f"values", name)
        return first

    def string(self, name: str) -> str | None:
        value = self._one(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(f"${self.operation}: the parameter '{name}' must be a string", name)
        return value or None  # ?filter= is no filter

    def strings(self, name: str) -> list[str]:
        """Every value of a repeating parameter (``property``), comma-separated values split."""
        out: list[str] = []
        for value in self._values.get(name, []):
            if not isinstance(value, str):
                raise invalid(f"${self.operation}: the parameter '{name}' must be a string", name)
            out.extend(v for v in value.split(",") if v)
        return out

    def integer(self, name: str) -> int | None:
        value = self._one(name)
        if value is None:
            return None
        if isinstance(value, str) and value.isdigit() and len(value) < 10:
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
            return value
        raise invalid(f"${self.operation}: the parameter '{name}' must be a non-negative integer", name)

    def boolean(self, name: str) -> bool:
        value = self._one(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return bool(value == "true")
        raise invalid(f"${self.operation}: the parameter '{name}' must be true or false", name)

    def resource(self, name: str, type: str) -> dict[str, Any] | None:
        value = self._one(name)
        if value is None:
            return None
        if not isinstance(value, dict) or value.get("resourceType") != type:
            raise invalid(f"${self.operation}: the parameter '{name}' must be a {type} resource", name)
        return value

    def coding(self, name: str) -> dict[str, Any] | None:
        value = self._one(name)
        if value is None:
            return None
        if isinstance(value, str):  # system|code, as a token in the query
            system, bar, code = value.rpartition("|")
            value = {"system": system, "code": code} if bar else {"code": code}
        if not _is_coding(value):
            raise invalid(f"${self.operation}: the parameter '{name}' must be a Coding with a code", name)
        return {k: v for k, v in value.items() if v not in (None, "")}

    def codings(self, name: str) -> list[dict[str, Any]] | None:
        """The codings of a CodeableConcept parameter."""
        value = self._one(name)
        if value is None:
            return None
        codings = value.get("coding") if isinstance(value, dict) else None
        if not isinstance(codings, list) or not codings or not all(_is_coding(c) for c in codings):
            raise invalid(f"${self.operation}: the parameter '{name}' must be a CodeableConcept with codings", name)
        return codings


def _is_coding(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("code"), str) and bool(value["code"]) and all(
        isinstance(value.get(k), str) for k in ("system", "version", "display") if value.get(k) is not None)


def one_of(params: OperationParameters, operation: str, *names: str) -> None:
    """Refuse (400) more than one of alternative inputs (code, coding, codeableConcept)."""
    given = [n for n in names if params.has(n)]
    if len(given) > 1:
        raise invalid(f"${operation}: give only one of {', '.join(given)}", given[1])


def operand(repo: Repository, params: OperationParameters, type: str, id: str | None, resource_param: str,
            url_param: str, version_param: str) -> tuple[dict[str, Any] | None, bool]:
    """(the ValueSet / CodeSystem / ConceptMap the operation works on, whether it may be cached):
    the instance, the ``url`` parameter (with its version) or a resource given inline."""
    defs = repo.svc.definitions
    inline = params.resource(resource_param, type)
    url = params.string(url_param)
    version = params.string(version_param)
    if id is not None:
        check_id(id)
        found = defs.get(type, id)
        if found is None:
            raise not_found(f"{type}/{id} is not known to this server")
        if inline is not None:
            raise invalid(f"Give either {type}/{id} or the '{resource_param}' parameter, not both", resource_param)
        if url is not None and url.partition("|")[0] != found.get("url"):
            raise invalid(f"The url {url} is not the url of {type}/{id} ({found.get('url')})", url_param)
        return found, True
    if inline is not None:
        if url is not None:
            raise invalid(f"Give either the '{url_param}' or the '{resource_param}' parameter, not both", url_param)
        # A resource from the client is validated as a write would be before the engine walks it.
        errors = [i for i in repo.check(inline) if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(Category.INVALID, f"The '{resource_param}' parameter is not a valid {type}",
                            issues=errors)
        return inline, False
    if url is None:
        return None, True
    canonical = f"{url}|{version}" if version and "|" not in url else url
    found = defs.resolve(canonical)
    if found is None or found.get("resourceType") != type:
        raise not_found(f"{type} {canonical} is not known to this server")
    return found, True
