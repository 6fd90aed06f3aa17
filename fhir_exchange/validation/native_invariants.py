"""Core invariants evaluated by hand-written Python: https://hl7.org/fhir/R4/bundle.html#invariants and
https://hl7.org/fhir/R4/references.html#Reference (ref-1).

Every Bundle checks eleven ``bdl-*`` constraints and every Reference ``ref-1``: on a message or a
transaction they are most of the FHIRPath work, though each asks a question a few dictionary reads
answer. Each function here answers one of them, by its exact R4 expression (``NATIVE_INVARIANTS`` is
keyed by it: a definition that says something else is evaluated by FHIRPath), for the JSON a client
sends when it is well formed: a value of an unexpected JSON type, a ``_name`` companion (an element
with extensions and perhaps no value) or anything else whose FHIRPath reading is subtle raises
:class:`Unsupported`, and the FHIRPath engine decides, as it did before. The answers are FHIRPath's:
``None`` for an empty result (which holds), and the three-valued ``or``/``implies`` as the
specification defines them. ``tests/unit/test_native_invariants.py`` compares each with the compiled
back-end and the full evaluator on the example corpora and on generated Bundles and References.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fhir_exchange.fhir.fhirpath.compiled import compile_fast
from fhir_exchange.fhir.fhirpath.compiled_values import Unsupported

Truth = Callable[[list[Any], dict[str, Any]], "bool | None"]


class NativeInvariant:
    """A hand-written constraint, called as the compiled back-end's closures are: ``fn(focus, env)``
    gives the result collection, ``truth(focus, env)`` the single boolean or None (empty).

    Where its function (``answer``) declines, the compiled closure of the same expression answers, as
    it did before this module existed (and where that declines too, the caller's full evaluator):
    the back-ends differ on a few odd inputs (``#`` alone as a reference), so a decline must not skip
    straight to the full evaluator."""

    __slots__ = ("_compiled", "answer", "env_free", "evaluated", "expression", "focus_names", "head_truth", "key",
                 "rule")

    def __init__(self, key: str, expression: str, answer: Truth, evaluated: str | None = None) -> None:
        self.key = key
        self.expression = expression
        # What is evaluated for this text where the function declines: the text itself, or the
        # checker's correction of it (ref-1).
        self.evaluated = evaluated or expression
        self.answer = answer
        # Its place in _answer's dispatch (-1: called through ``answer``), when ``answer`` is that rule's.
        self.rule = _DISPATCH.index(key) if key in _DISPATCH and _FUNCTIONS.get(key) is answer else -1
        self._compiled: Any = None  # compile_fast(expression), on the first decline
        # What InvariantChecker asks of a compiled closure: no guard, nothing to evaluate early.
        self.focus_names: frozenset[str] | None = None
        self.env_free = False
        self.head_truth: Truth | None = None

    def compiled(self) -> Any:
        fn = self._compiled
        if fn is None:
            fn = self._compiled = compile_fast(self.evaluated)
        return fn

    def _answer(self, focus: list[Any], env: dict[str, Any]) -> bool | None:
        """``answer(focus, env)``, as a direct call of the function where the compiled build can make
        one (a function held in an attribute is called through the generic protocol: about a
        thousand machine instructions, more than most of these rules take)."""
        rule = self.rule
        if rule == 0:
            return ref_1(focus, env)
        if rule == 1:
            return bdl_5(focus, env)
        if rule == 2:
            return bdl_8(focus, env)
        if rule == 3:
            return bdl_1(focus, env)
        if rule == 4:
            return bdl_2(focus, env)
        if rule == 5:
            return bdl_3(focus, env)
        if rule == 6:
            return bdl_4(focus, env)
        if rule == 7:
            return bdl_7(focus, env)
        if rule == 8:
            return bdl_9(focus, env)
        if rule == 9:
            return bdl_10(focus, env)
        if rule == 10:
            return bdl_11(focus, env)
        if rule == 11:
            return bdl_12(focus, env)
        return self.answer(focus, env)

    def holds_at_once(self, node: Any) -> bool:
        """True when the rule holds on ``node`` whatever the environment (%resource...): the caller
        need not build one. False says nothing: ask :meth:`truth`. (ref-1 asks nothing of a
        reference that is not local, the common case.)"""
        return self.rule == 0 and _not_local(node)

    def truth(self, focus: list[Any], env: dict[str, Any]) -> bool | None:
        try:
            return self._answer(focus, env)
        except Unsupported:
            result: list[Any] = self.compiled()(focus, env)
            # Read as InvariantChecker reads a collection: broken only as a single false.
            if len(result) == 1 and result[0] is False:
                return False
            return True if result else None

    def __call__(self, focus: list[Any], env: dict[str, Any]) -> list[Any]:
        try:
            answer = self._answer(focus, env)
        except Unsupported:
            compiled: list[Any] = self.compiled()(focus, env)
            return compiled
        return [] if answer is None else [answer]


def _focus(focus: list[Any]) -> dict[str, Any]:
    if len(focus) != 1 or type(focus[0]) is not dict:
        raise Unsupported("native invariant: one JSON object expected")
    node: dict[str, Any] = focus[0]
    return node


def _string(node: dict[str, Any], name: str, companion: str) -> str | None:
    """A primitive's value; None when absent. Its ``_name`` companion makes it an element FHIRPath
    sees even without a value: that reading is the engine's. (``companion`` is ``"_" + name``, a
    literal at each call: building it per call cost more than the rest of the function.)"""
    value = node.get(name)
    if not (value is None or type(value) is str) or companion in node:
        raise Unsupported(f"native invariant: {name}")
    return value


def _present(node: dict[str, Any], name: str) -> bool:
    """``name.exists()`` of a complex element (no companion): any value but null; a list is left to
    the engine (an empty one is an empty collection)."""
    value = node.get(name)
    if type(value) is list:
        raise Unsupported(f"native invariant: {name} is an array")
    return value is not None


def _entries(node: dict[str, Any]) -> list[dict[str, Any]]:
    entries = node.get("entry")
    if entries is None:
        return []
    if type(entries) is not list:
        raise Unsupported("native invariant: entry")
    for e in entries:
        if type(e) is not dict:
            raise Unsupported("native invariant: entry")
    out: list[dict[str, Any]] = entries
    return out


def _or(terms: tuple[bool | None, ...]) -> bool | None:
    """FHIRPath ``or`` of terms already evaluated: true wins, then empty, then false."""
    empty = False
    for t in terms:
        if t is True:
            return True
        if t is None:
            empty = True
    return None if empty else False


def _implies(left: bool | None, right: bool | None) -> bool | None:
    if left is False or right is True:
        return True
    if left is True:
        return right
    return None  # empty implies false, or empty


def _type_is(node: dict[str, Any], codes: tuple[str, ...]) -> bool | None:
    """``type = 'a'`` (or ``type = 'a' or type = 'b'``...): None when there is no type."""
    t = _string(node, "type", "_type")
    return None if t is None else t in codes


def bdl_1(focus: list[Any], env: dict[str, Any]) -> bool | None:
    node = _focus(focus)
    total = node.get("total")
    if "_total" in node or type(total) is list:
        raise Unsupported("native invariant: total")
    if total is None:
        return True
    return _or((False, _type_is(node, ("searchset",)), _type_is(node, ("history",))))


def bdl_2(focus: list[Any], env: dict[str, Any]) -> bool | None:
    node = _focus(focus)
    if not any(_present(e, "search") for e in _entries(node)):
        return True
    return _or((False, _type_is(node, ("searchset",))))


def _request_response(focus: list[Any], env: dict[str, Any], name: str, codes: tuple[str, ...]) -> bool | None:
    node = _focus(focus)
    entries = _entries(node)
    if not entries:
        return True
    # %resource is the resource the Bundle site belongs to: the Bundle itself.
    resource = env["resource"]
    if len(resource) != 1 or type(resource[0]) is not dict:
        raise Unsupported("native invariant: %resource")
    expected = _type_is(resource[0], codes)
    if expected is None:
        raise Unsupported("native invariant: all() over an empty criterion")
    return all(_present(e, name) == expected for e in entries)


def bdl_3(focus: list[Any], env: dict[str, Any]) -> bool | None:
    return _request_response(focus, env, "request", ("batch", "transaction", "history"))


def bdl_4(focus: list[Any], env: dict[str, Any]) -> bool | None:
    return _request_response(focus, env, "response", ("batch-response", "transaction-response", "history"))


def bdl_5(focus: list[Any], env: dict[str, Any]) -> bool | None:
    entry = _focus(focus)
    return _present(entry, "resource") or _present(entry, "request") or _present(entry, "response")


def bdl_7(focus: list[Any], env: dict[str, Any]) -> bool | None:
    node = _focus(focus)
    history = _type_is(node, ("history",))
    if history is True:
        return True
    return _or((history, _distinct_full_urls(node)))


def _distinct_full_urls(node: dict[str, Any]) -> bool:
    """``entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()``."""
    seen: set[str] = set()
    for e in _entries(node):
        full = _string(e, "fullUrl", "_fullUrl")
        if full is None:
            continue
        version = ""
        res = e.get("resource")
        if res is not None:
            if type(res) is not dict:
                raise Unsupported("native invariant: entry.resource")
            meta = res.get("meta")
            if meta is not None:
                if type(meta) is not dict:
                    raise Unsupported("native invariant: meta")
                version = _string(meta, "versionId", "_versionId") or ""
        key = full + version
        if key in seen:
            return False
        seen.add(key)
    return True


def bdl_8(focus: list[Any], env: dict[str, Any]) -> bool | None:
    full = _string(_focus(focus), "fullUrl", "_fullUrl")
    return None if full is None else "/_history/" not in full


def bdl_9(focus: list[Any], env: dict[str, Any]) -> bool | None:
    node = _focus(focus)
    document = _type_is(node, ("document",))
    if document is False:
        return True
    identifier = node.get("identifier")
    if identifier is None:
        return _implies(document, False)
    if type(identifier) is not dict:
        raise Unsupported("native invariant: identifier")
    system = _string(identifier, "system", "_system")
    value = _string(identifier, "value", "_value")
    return _implies(document, system is not None and value is not None)


def bdl_10(focus: list[Any], env: dict[str, Any]) -> bool | None:
    node = _focus(focus)
    document = _type_is(node, ("document",))
    if document is False:
        return True
    return _implies(document, _string(node, "timestamp", "_timestamp") is not None)


def _first_is(focus: list[Any], bundle_type: str, resource_type: str) -> bool | None:
    node = _focus(focus)
    kind = _type_is(node, (bundle_type,))
    entries = _entries(node)
    first: bool | None = None  # entry.first().resource.is(T) of no entry or no resource: empty
    if entries:
        res = entries[0].get("resource")
        if res is not None:
            if type(res) is not dict or type(res.get("resourceType")) is not str:
                raise Unsupported("native invariant: entry.resource")
            first = res["resourceType"] == resource_type
    return _implies(kind, first)


def bdl_11(focus: list[Any], env: dict[str, Any]) -> bool | None:
    return _first_is(focus, "document", "Composition")


def bdl_12(focus: list[Any], env: dict[str, Any]) -> bool | None:
    return _first_is(focus, "message", "MessageHeader")


def _not_local(node: Any) -> bool:
    """A Reference whose ``reference`` is a string not starting with '#' (and no ``_reference``): its
    first term, ``reference.startsWith('#').not()``, is true, and so is ref-1."""
    if type(node) is not dict or "_reference" in node:
        return False
    ref = node.get("reference")
    return type(ref) is str and not ref.startswith("#")


def ref_1(focus: list[Any], env: dict[str, Any]) -> bool | None:
    node = _focus(focus)
    ref = _string(node, "reference", "_reference")
    if ref is None:
        return None  # every term is empty (or false): the whole is empty
    if not ref.startswith("#"):
        return True
    if ref == "#":
        raise Unsupported("native invariant: '#'")  # substring(1) of '#' and the resource equality: the engine's
    root = env["rootResource"]
    if len(root) != 1 or type(root[0]) is not dict:
        raise Unsupported("native invariant: %rootResource")
    contained = root[0].get("contained")
    if contained is None:
        return False
    if type(contained) is not list:
        raise Unsupported("native invariant: contained")
    wanted = ref[1:]
    for c in contained:
        if type(c) is not dict:
            raise Unsupported("native invariant: contained")
        if _string(c, "id", "_id") == wanted:
            return True
    return False


# The exact R4 expressions: another text is not these rules. ref-1 also by its text as the R4 package
# has it, without the third term the checker adds (invariants.CORRECTIONS): for every reference the
# function answers (none or '#'-less, or '#id') the two texts agree.
_REF_1_R4: Final = ("reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
             "%rootResource.contained.id.trace('ids'))")
_REF_1: Final = _REF_1_R4 + " or (reference = '#' and %rootResource != %resource)"
_RULES: Final[tuple[tuple[str, str, Truth, str | None], ...]] = (
    ("bdl-1", "total.empty() or (type = 'searchset') or (type = 'history')", bdl_1, None),
    ("bdl-2", "entry.search.empty() or (type = 'searchset')", bdl_2, None),
    ("bdl-3", "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or "
              "%resource.type = 'history'))", bdl_3, None),
    ("bdl-4", "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = "
              "'transaction-response' or %resource.type = 'history'))", bdl_4, None),
    ("bdl-5", "resource.exists() or request.exists() or response.exists()", bdl_5, None),
    ("bdl-7", "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId)"
              ".isDistinct()", bdl_7, None),
    ("bdl-8", "fullUrl.contains('/_history/').not()", bdl_8, None),
    ("bdl-9", "type = 'document' implies (identifier.system.exists() and identifier.value.exists())", bdl_9, None),
    ("bdl-10", "type = 'document' implies (timestamp.hasValue())", bdl_10, None),
    ("bdl-11", "type = 'document' implies entry.first().resource.is(Composition)", bdl_11, None),
    ("bdl-12", "type = 'message' implies entry.first().resource.is(MessageHeader)", bdl_12, None),
    ("ref-1", _REF_1, ref_1, None),
    ("ref-1", _REF_1_R4, ref_1, _REF_1),
)

# _answer's order: the rules met most often first.
_DISPATCH: Final = ("ref-1", "bdl-5", "bdl-8", "bdl-1", "bdl-2", "bdl-3", "bdl-4", "bdl-7", "bdl-9", "bdl-10",
                    "bdl-11", "bdl-12")
_FUNCTIONS: Final[dict[str, Truth]] = {key: fn for key, _, fn, _ in _RULES}

# By expression: what InvariantChecker evaluates natively, and what the structural walk leaves out of
# its invariant sites (shapes.py) for the validator to check over what the walk collected.
NATIVE_INVARIANTS: Final[dict[str, NativeInvariant]] = {
    expression: NativeInvariant(key, expression, fn, evaluated) for key, expression, fn, evaluated in _RULES}
