"""Utility functions: http://hl7.org/fhirpath/N1/#utility-functions (``trace()``, ``now()``,
``today()``, ``timeOfDay()``); the clock is fixed per evaluation by the :class:`Environment`.
"""

from __future__ import annotations

import logging
from typing import Any

from fhir_exchange.fhir.fhirpath.environment import call_hook, env_of
from fhir_exchange.fhir.fhirpath.items import Expr, output_value, scoped, str_param
from fhir_exchange.fhir.fhirpath.temporal import Temporal

log = logging.getLogger("fhir_exchange.fhirpath")


def _trace(ctx: dict[str, Any], data: list[Any], name: Any, projection: Expr | None = None) -> list[Any]:
    label = str_param(name) or ""
    shown = data if projection is None else [x for item in data for x in projection(item)]
    tracer = env_of(ctx).tracer
    if tracer is not None:
        call_hook(tracer, label, [output_value(x) for x in shown])
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("trace %s: %r", label, [output_value(x) for x in shown])
    return data


# --------------------------------------------------------------------------------------------
# Date and time (spec: Utility functions)
# --------------------------------------------------------------------------------------------


def _now(ctx: dict[str, Any], data: list[Any]) -> list[Temporal]:
    return [env_of(ctx).clock("DateTime")]


def _today(ctx: dict[str, Any], data: list[Any]) -> list[Temporal]:
    return [env_of(ctx).clock("Date")]


def _time_of_day(ctx: dict[str, Any], data: list[Any]) -> list[Temporal]:
    return [env_of(ctx).clock("Time")]


ENTRIES: dict[str, dict[str, Any]] = {
    "trace": {"fn": scoped(_trace), "arity": {1: ["Any"], 2: ["Any", "Expr"]}},
    "now": {"fn": _now},
    "today": {"fn": _today},
    "timeOfDay": {"fn": _time_of_day},
}
