"""The environment ``InvariantChecker.check`` gives its closures (validation/invariants.py).

Built once per resource and copied per node (issue 15, speed): what a node's evaluation caches in it
(focus-free parts, ``%shared``) must not reach another node, ``resolve`` is the caller's of each
call, and a hook that checks another node while an expression runs (``conformsTo()`` validating
with a profile's invariants) must not disturb the running one.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.validation.invariants import InvariantChecker
from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.schema import Constraint


def _failed(sink: IssueSink) -> list[tuple[str, str | None]]:
    return [(i.diagnostics.split(":")[1].strip(), i.expression[0] if i.expression else None)
            for i in sink.result() if i.severity == "error"]


def test_a_cached_part_of_one_node_does_not_answer_for_the_next() -> None:
    # ``%context.a`` inside all() is focus-free: evaluated once per node, cached in its environment.
    c = Constraint("t-1", "error", "b equals the context's a", "b.all($this = %context.a)", None)
    resource: dict[str, Any] = {"resourceType": "Basic", "x": [{"a": 1, "b": [1, 1]}, {"a": 2, "b": [1]},
                                                                  {"a": 1, "b": [1]}]}
    checker, sink = InvariantChecker(), IssueSink()
    for i, node in enumerate(resource["x"]):
        checker.check((c,), node, f"Basic.x[{i}]", "Basic.x", resource, resource, sink)
    assert _failed(sink) == [("t-1", "Basic.x[1]")]


def test_each_call_resolves_with_its_own_resolver() -> None:
    c = Constraint("t-2", "error", "the reference resolves", "r.resolve().exists()", None)
    resource = {"resourceType": "Basic", "r": {"reference": "Patient/1"}}
    checker, sink = InvariantChecker(), IssueSink()
    found: dict[str, Any] = {"resourceType": "Patient", "id": "1"}
    checker.check((c,), resource, "Basic", "Basic", resource, resource, sink, lambda ref: found)
    checker.check((c,), resource, "Basic/2", "Basic", resource, resource, sink, lambda ref: None)
    checker.check((c,), resource, "Basic/3", "Basic", resource, resource, sink, lambda ref: found)
    assert _failed(sink) == [("t-2", "Basic/2")]


def test_another_resource_gets_its_own_environment() -> None:
    c = Constraint("t-3", "error", "the resource's status", "%resource.status = 'ok'", None)
    checker, sink = InvariantChecker(), IssueSink()
    for i, status in enumerate(["ok", "bad", "ok"]):
        resource = {"resourceType": "Basic", "status": status}
        checker.check((c,), resource, f"Basic/{i}", "Basic", resource, resource, sink)
    assert _failed(sink) == [("t-3", "Basic/1")]


def test_a_hook_that_checks_another_node_leaves_the_running_expression_alone() -> None:
    inner = Constraint("t-4", "error", "inner", "%context.v = 'inner'", None)
    outer = Constraint("t-5", "error", "outer", "r.all(conformsTo('http://x/p')) and %context.v = 'outer'", None)
    resource: dict[str, Any] = {"resourceType": "Basic", "v": "outer",
                                "r": [{"resourceType": "Basic", "v": "inner"}]}
    sink = IssueSink()

    def conforms_to(res: dict[str, Any], url: str) -> bool:
        # Validating with a profile checks that profile's invariants, on the same resource.
        checker.check((inner,), resource["r"][0], "Basic.r[0]", "Basic", resource, resource, sink)
        return True
    checker = InvariantChecker(conforms_to=conforms_to)
    checker.check((outer,), resource, "Basic", "Basic", resource, resource, sink)
    assert _failed(sink) == []
    checker.check((outer,), resource["r"][0], "Basic.r[0]", "Basic", resource, resource, sink)
    assert _failed(sink) == [("t-5", "Basic.r[0]")]


_PROBED = [
    "a.exists() or b.exists()", "a = 'x' or %resource.b = 'y'", "(a.startsWith('#').not() or b) or %context.c",
    "a.hasValue().not() or b.hasValue().not() or (a <= b)", "a.exists() implies b.exists()",
    "a = 'x' or %resource.c.exists()", "c.all($this = %context.a) or a = 'x'", "a.count() > 1 or b = 'z'",
]
_NODES: list[dict[str, Any]] = [
    {}, {"a": "x"}, {"a": "#x", "b": True}, {"a": "#x", "b": False, "c": 1}, {"a": ["x", "y"]},
    {"a": "2020-01-01", "b": "2019-12-31"}, {"a": "2020", "b": "2020-01-02"}, {"b": "y", "c": [1, 2]},
    {"a": None, "_a": {"id": "i"}, "b": "z"}, {"a": 3, "b": False},
]


def test_what_is_evaluated_before_the_environment_gives_the_same_verdicts() -> None:
    """Expressions (or their leading ``or`` terms) that read nothing from the environment are tried
    before it is built; the verdicts are those of :meth:`InvariantChecker.evaluate`, which builds it."""
    checker = InvariantChecker()
    compared = 0
    for i, expression in enumerate(_PROBED):
        c = Constraint(f"p-{i}", "error", "probed", expression, None)
        for node in _NODES:
            resource: dict[str, Any] = {"resourceType": "Basic", "b": "y", "x": node}
            expected = checker.evaluate(expression, node, "Basic.x", resource, resource)
            sink = IssueSink()
            checker.check((c,), node, "Basic.x", "Basic.x", resource, resource, sink)
            issues = [(i.severity, i.message_id) for i in sink.result()]
            if expected is None:
                assert issues == [("information", "sd-invariant-not-evaluated")], (expression, node)
            else:
                assert issues == ([] if expected else [("error", "sd-invariant")]), (expression, node, expected)
            compared += 1
    assert compared == len(_PROBED) * len(_NODES)


def test_conforms_to_is_never_answered_without_its_hook() -> None:
    # Without the hook conformsTo() reads meta.profile; with it, the hook decides: the expression
    # must not be tried before the environment (with the hook) is built.
    c = Constraint("p-9", "error", "conforms", "conformsTo('http://x/p') or false", None)
    resource = {"resourceType": "Basic", "meta": {"profile": ["http://x/p"]}}
    checker, sink = InvariantChecker(conforms_to=lambda res, url: False), IssueSink()
    checker.check((c,), resource, "Basic", "Basic", resource, resource, sink)
    assert _failed(sink) == [("p-9", "Basic")]
