"""FHIRPath values: the System types and the typing of FHIR items, http://hl7.org/fhirpath/N1/#types
and https://hl7.org/fhir/R4/fhirpath.html#types.

fhirpathpy keeps FHIR data as :class:`~fhirpathpy.engine.nodes.ResourceNode` (raw JSON plus the
model path, which after its ``path2Type`` lookup is the FHIR type name) and has its own
``FP_DateTime``/``FP_Quantity``. Those two lose the Date/DateTime distinction, timezones in
arithmetic and unit conversions, so the functions of the table work on the small value types of
:mod:`temporal`, :mod:`quantity` and :mod:`numbers` instead. Literals are folded into these
types at compile time (see :mod:`parser`), so fhirpathpy's FP_* types rarely reach them; when a
function left to fhirpathpy returns one, :func:`from_fhirpathpy` maps it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fhirpathpy.engine.nodes import FP_DateTime, FP_Quantity, FP_Time, ResourceNode
from fhirpathpy.models import models

from fhir_exchange.fhir.fhirpath.numbers import to_decimal

# UCUM and compare_temporal are re-exported (``as`` form) for modules written when this module
# held them (compiled_values); new code imports them from quantity / temporal.
from fhir_exchange.fhir.fhirpath.quantity import UCUM as UCUM
from fhir_exchange.fhir.fhirpath.quantity import Quantity, fhir_quantity
from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.temporal import compare_temporal as compare_temporal

R4_MODEL: dict[str, Any] = models["r4"]
_TYPE2PARENT: dict[str, str | None] = R4_MODEL["type2Parent"]


class _LenientChoices(dict[str, list[str]]):
    """fhirpathpy's ``choiceTypePaths``, plus a guess for elements of an untyped parent.

    fhirpathpy resolves ``value`` to ``valueString`` only through this table, keyed by the
    parent's model path; a context passed without its type (path ``_``) would never find a
    choice element, so ext-1 (``extension.exists() != value.exists()``) would fail on every
    Extension. For such parents we offer the plain name first, then every choice suffix.
    """

    def get(self, key: str, default: Any = None) -> Any:
        found = dict.get(self, key)
        if found is None and key.startswith("_."):
            return _ALL_CHOICE_SUFFIXES
        return default if found is None else found


_ALL_CHOICE_SUFFIXES = ["", *sorted({t for ts in R4_MODEL["choiceTypePaths"].values() for t in ts})]
# The model handed to fhirpathpy's evaluator (read-only; shared by all evaluations).
EVAL_MODEL: dict[str, Any] = {**R4_MODEL, "choiceTypePaths": _LenientChoices(R4_MODEL["choiceTypePaths"])}

FHIR_PRIMITIVES = frozenset(
    {
        "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary",
        "instant", "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt",
        "positiveInt", "uuid", "xhtml", "integer64",
    }
)  # fmt: skip
SYSTEM_TYPES = frozenset(
    {"Any", "Boolean", "String", "Integer", "Long", "Decimal", "Date", "DateTime", "Time", "Quantity"}
)
FHIR_TYPES = frozenset(
    set(_TYPE2PARENT)
    | {p for p in _TYPE2PARENT.values() if p}
    | FHIR_PRIMITIVES
    | {"Element", "BackboneElement", "Resource", "DomainResource", "Base"}
)
_QUANTITY_TYPES = frozenset({"Quantity", "Age", "Distance", "Duration", "Count", "SimpleQuantity", "MoneyQuantity"})
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "integer64", "System.Integer"})


# --------------------------------------------------------------------------------------------
# Nodes: typing and conversion of fhirpathpy's ResourceNode items
# --------------------------------------------------------------------------------------------


def is_primitive_path(path: str | None) -> bool:
    return path is not None and (path in FHIR_PRIMITIVES or path.startswith("System."))


def is_extension_carrier(item: Any) -> bool:
    """A ``_name`` object of a primitive that has no value (only id/extension)."""
    if not isinstance(item, ResourceNode) or not isinstance(item.data, Mapping):
        return False
    path = item.path
    return path is not None and (is_primitive_path(path) or path.rsplit(".", 1)[-1].startswith("_"))


def fhir_type_name(item: Any) -> tuple[str, str] | None:
    """(namespace, name) of an item, as ``type()`` reports it; None if unknown."""
    if isinstance(item, ResourceNode):
        path = item.path
        data = item.data
        if isinstance(data, Mapping) and "resourceType" in data:
            return "FHIR", data["resourceType"]
        if path is None or path.startswith("_"):
            return system_type_name(data)
        if path.startswith("System."):
            return "System", path[7:]
        if "." in path:
            return "FHIR", "BackboneElement"
        return "FHIR", path
    if isinstance(item, Mapping):
        if "resourceType" in item:
            return "FHIR", item["resourceType"]
        if set(item) == {"namespace", "name"}:  # the result of type()
            return "System", "Any"
        return None
    return system_type_name(item)


def system_type_name(value: Any) -> tuple[str, str] | None:
    if isinstance(value, bool):
        return "System", "Boolean"
    if isinstance(value, int):
        return "System", "Integer"
    if isinstance(value, Decimal | float):
        return "System", "Decimal"
    if isinstance(value, str):
        return "System", "String"
    if isinstance(value, Temporal):
        return "System", value.kind
    if isinstance(value, Quantity):
        return "System", "Quantity"
    return None


def is_subtype(name: str, ancestor: str) -> bool:
    current: str | None = name
    while current:
        if current == ancestor:
            return True
        current = _TYPE2PARENT.get(current)
        if current is None and ancestor in ("Base",):
            return True
    return False


def data_of(item: Any) -> Any:
    return item.data if isinstance(item, ResourceNode) else item


def system_value(item: Any) -> Any:
    """The System value of an item: FHIR primitives become bool/int/Decimal/str/Temporal.

    Complex FHIR values stay as they are (a ResourceNode or dict). An item that cannot be read
    as its declared type (a malformed date, say) is returned as the raw JSON value.
    """
    if not isinstance(item, ResourceNode):
        if isinstance(item, float):
            return to_decimal(item)
        if isinstance(item, FP_DateTime | FP_Time | FP_Quantity):
            return from_fhirpathpy(item)
        return item
    data = item.data
    if isinstance(data, Mapping) or data is None:
        return item
    path = item.path
    if isinstance(data, bool):
        return data
    if isinstance(data, int | float) and not isinstance(data, bool):
        if path in _INTEGERS and isinstance(data, int):
            return data
        return to_decimal(data) if path == "decimal" or isinstance(data, float) else data
    if isinstance(data, str):
        if path == "date":
            return Temporal.parse_date(data) or data
        if path in ("dateTime", "instant"):
            return Temporal.parse_datetime(data) or data
        if path == "time":
            return Temporal.parse_time(data) or data
        return data
    return data


def from_fhirpathpy(value: Any) -> Any:
    """Map fhirpathpy's own value types (from functions we do not override) onto ours."""
    if isinstance(value, FP_Quantity):
        unit = str(value.unit)
        if unit.startswith("'"):
            return Quantity(to_decimal(value.value), unit.strip("'"))
        return Quantity(to_decimal(value.value), unit, True)
    if isinstance(value, FP_Time):
        return Temporal.parse_time(value.asStr.lstrip("T")) or value.asStr
    if isinstance(value, FP_DateTime):
        text = value.asStr
        return (Temporal.parse_datetime(text) if "T" in text else Temporal.parse_date(text)) or text
    return value


def as_quantity(value: Any) -> Quantity | None:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, ResourceNode) and isinstance(value.data, Mapping) and value.path in _QUANTITY_TYPES:
        return fhir_quantity(value.data)
    return None


def describe(value: Any) -> str:
    t = fhir_type_name(value)
    return f"{t[0]}.{t[1]}" if t else type(value).__name__
