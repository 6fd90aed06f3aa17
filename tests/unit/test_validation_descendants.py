"""``descendants().ofType(T)`` from the definitions (validation/shapes.py) against a plain walk.

Oracle: a direct recursive walk over the shapes (every property of every object, its type from
the element definitions), which is what ``ShapeBuilder.descendants_of_type`` computed before it
used per-type plans. Both must give the same elements in the same order, for several types, on
every example resource the tests carry (core examples, validator cases, the consult IG), and on
crafted resources with nulls, wrong JSON types, contained and nested Bundle resources.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator
from fhir_exchange.validation.shapes import COMPLEX, PRIM, RESOURCE, Shape, ShapeBuilder

ROOT = Path(__file__).resolve().parents[2]
TYPES = ("Reference", "Coding", "Identifier", "string", "Extension", "Quantity", "Narrative")


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def plain_walk(shapes: ShapeBuilder, items: list[Any], type_code: str) -> list[Any]:
    out: list[Any] = []

    def walk(obj: dict[str, Any], shape: Shape) -> None:
        for key, value in obj.items():
            p = shape.props.get(key)
            if p is None:
                continue
            for v in value if isinstance(value, list) else (value,):
                if v is None:
                    continue
                if p.kind == RESOURCE:
                    if isinstance(v, dict) and isinstance(v.get("resourceType"), str):
                        if type_code in (v["resourceType"], "Resource", "DomainResource"):
                            out.append(v)
                        inner = shapes.resource_shape(v["resourceType"])
                        if inner is not None:
                            walk(v, inner)
                    continue
                if p.type_code == type_code:
                    out.append(v)
                if p.kind == COMPLEX and isinstance(v, dict):
                    walk(v, shapes.resolve(p))
                assert p.kind in (PRIM, COMPLEX)

    for item in items:
        shape = shapes.resource_shape(item["resourceType"])
        if shape is not None:
            walk(item, shape)
    return out


def corpus() -> list[dict[str, Any]]:
    out = []
    for folder in (ROOT / "tests" / "data", ROOT / "examples"):
        for f in sorted(folder.glob("**/*.json")):
            try:
                res = json.loads(f.read_bytes())
            except ValueError:
                continue
            if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
                out.append(res)
    return out


CRAFTED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "managingOrganization": None, "generalPractitioner": [None, {"reference": "a"}],
     "contained": [{"resourceType": "Organization", "partOf": {"reference": "#x"}}, None, "text", {"id": "x"}],
     "identifier": [{"assigner": {"reference": "o", "identifier": {"assigner": {"display": "deep"}}}}],
     "extension": [{"url": "u", "valueReference": {"reference": "e"}},
                   {"url": "v", "extension": [{"url": "w", "valueReference": {"reference": "f"}}]}]},
    {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation",
                                                                         "subject": {"reference": "s"}}}]}},
        {"resource": {"resourceType": "NoSuchType", "subject": {"reference": "t"}}},
        {"resource": "a string"}, {"link": [{"relation": 3}]}]},
    {"resourceType": "Observation", "valueReference": {"reference": "x"}, "subject": "wrong type",
     "performer": {"reference": "not an array"}, "component": [{"valueQuantity": {"value": 1}}],
     "code": {"coding": [{"system": "s", "code": "c", "extension": [{"url": "u", "valueCoding": {"code": "d"}}]}]}},
    {"resourceType": "Parameters", "parameter": [{"name": "a", "resource": {"resourceType": "Patient",
                                                                            "link": [{"other": {"reference": "p"}}]}},
                                                 {"name": "b", "part": [{"name": "c", "valueReference": {}}]}]},
]


@pytest.mark.parametrize("type_code", TYPES)
def test_plans_agree_with_a_plain_walk(type_code: str) -> None:
    shapes = validator().shapes
    compared = 0
    for res in [*corpus(), *CRAFTED]:
        if shapes.resource_shape(res["resourceType"]) is None:
            continue
        ours = shapes.descendants_of_type([res], type_code)
        expected = plain_walk(shapes, [res], type_code)
        assert len(ours) == len(expected) and all(a is b for a, b in zip(ours, expected, strict=True)), (
            res.get("resourceType"), res.get("id"))
        compared += bool(expected)
    assert compared > 10  # resources where the type occurs at all


def test_crafted_resources_find_their_references() -> None:
    found = validator().shapes.descendants_of_type(CRAFTED[:2], "Reference")
    refs = [r.get("reference") for r in found]
    # The contained Organization's partOf; the assigner inside an assigner; extensions at any depth;
    # the nested Bundle's Observation; not the resource of an unknown type.
    assert refs == ["a", "#x", "o", None, "e", "f", "s"]


def test_a_non_resource_is_refused() -> None:
    with pytest.raises(ValueError):
        validator().shapes.descendants_of_type([{"reference": "x"}], "Reference")
