"""Parse FHIR search parameters (https://hl7.org/fhir/R4/search.html#Introduction) into a typed
:class:`SearchQuery`. Pure: no store access; terminology for ``:in``/``:above``/``:below`` comes from
the loaded definitions.

Errors: a malformed value, an unknown modifier, a bad chain or ``_has``, a bad ``_sort``/``_include``
are always a 400 OperationOutcome naming the parameter (search.html#errors). A query beyond one of the
:mod:`fhir_exchange.search.limits` (criteria, OR values, sort keys, chain and ``_has`` depth, includes,
length) is a 400 naming the limit, checked on the raw names and values before anything is parsed (a
chain without a type modifier fans out over every target type, so parsing a deep one costs already).
An unknown parameter is a 400 only with ``strict`` (``Prefer: handling=strict``); otherwise it is
ignored and left out of ``link_params`` (so the self link shows what was actually applied), as HAPI
FHIR and Blaze do. ``_filter`` goes to :mod:`fhir_exchange.search.filter`, whose comparisons come back
here as the plain parameters they mean.
"""

from __future__ import annotations

import re
from datetime import datetime

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import invalid
from fhir_exchange.search import filter as search_filter
from fhir_exchange.search import limits as search_limits
from fhir_exchange.search import registry
from fhir_exchange.search.params import KINDS, split_escaped, unescape
from fhir_exchange.search.params import date as date_kind
from fhir_exchange.search.params import token as token_kind
from fhir_exchange.search.query import (
    AnyOf,
    Chain,
    CompositeValue,
    Criterion,
    Has,
    IdIn,
    Include,
    MissingValue,
    Param,
    ReferenceValue,
    SearchQuery,
    SortKey,
    TokenValue,
    Value,
)
from fhir_exchange.validation.terminology import Terminology

RESULT_PARAMS = frozenset({"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_format",
                           "_pretty", "_include", "_revinclude", "_type"})
IGNORED = frozenset({"_format", "_pretty"})
_LIST_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a List's logical id (datatypes.html#id)
SUMMARY = frozenset({"true", "false", "text", "data", "count"})
TOTAL = frozenset({"none", "estimate", "accurate"})

def _terminology(defs: Definitions) -> Terminology:
    """The local terminology that expands ``:in``/``:below`` ValueSets, kept with the definitions."""
    return defs.derived("search.terminology", lambda: Terminology(defs))


class _Unknown(Exception):
    """An unknown parameter name: a 400 in strict mode, ignored otherwise."""


def _nonneg_int(name: str, value: str) -> int:
    if not value.isdigit():
        raise invalid(f"Invalid {name} '{value}': expected a non-negative integer", name)
    return int(value)


# -- values -------------------------------------------------------------------------------------


def _expand_in(defs: Definitions, name: str, url: str) -> list[TokenValue]:
    exp = _terminology(defs).expand(url)
    if exp is None:
        raise invalid(f"Unknown ValueSet '{url}' in search parameter '{name}'", name)
    if exp.open_systems or exp.all_open:
        raise invalid(f"The ValueSet '{url}' of search parameter '{name}' cannot be expanded locally", name,
                      code="not-supported")
    # A bare code (a ``code`` element) carries no system: it matches by code alone.
    return [v for system, codes in exp.codes.items() for code in codes
            for v in (TokenValue(system, code), TokenValue("", code))]


def _hierarchy(defs: Definitions, name: str, raw: str, modifier: str) -> list[TokenValue]:
    v = token_kind.parse_value(raw, None, name)
    if not v.system or v.code is None:
        raise invalid(f"Search parameter '{name}' with :{modifier} needs 'system|code'", name)
    cs = _terminology(defs).code_system(v.system)
    if cs is None:
        raise invalid(f"Unknown CodeSystem '{v.system}' in search parameter '{name}'", name)
    codes = {v.code}
    if modifier == "below":
        codes |= cs.descendants(v.code)
    else:
        stack = [v.code]
        while stack:
            for p in cs.parents.get(stack.pop(), ()):
                if p not in codes:
                    codes.add(p)
                    stack.append(p)
    return [tv for c in sorted(codes) for tv in (TokenValue(v.system, c), TokenValue("", c))]


def _param(defs: Definitions, type: str, sp: registry.SearchParam, name: str, modifier: str | None,
           raw: str, now: datetime | None) -> Criterion:
    kind = sp.type
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise invalid(f"Invalid value '{raw}' for '{name}': :missing takes true or false", name)
        return Param(sp.code, kind, "missing", (MissingValue(raw == "true"),))
    if sp.code == "_id" and modifier in (None, "not"):
        ids = tuple(unescape(p) for p in split_escaped(raw, ","))
        if not all(ids):
            raise invalid(f"Empty value for search parameter '{name}'", name)
        return IdIn(ids, modifier == "not")
    target: str | None = None
    if kind == "reference" and modifier and modifier != "identifier":
        if not defs.is_resource_type(modifier):
            raise invalid(f"Unknown modifier ':{modifier}' on search parameter '{sp.code}'", name)
        if sp.targets and modifier not in sp.targets:
            raise invalid(f"Search parameter '{sp.code}' cannot refer to {modifier}", name)
        target, modifier = modifier, None
    elif modifier is not None and (kind == "composite" or modifier not in KINDS[kind].MODIFIERS):
        raise invalid(f"Unknown or unsupported modifier ':{modifier}' on {kind} parameter '{sp.code}'", name)
    parts = split_escaped(raw, ",")
    values: list[Value] = []
    if kind == "token" and modifier in ("in", "not-in"):
        for p in parts:
            values.extend(_expand_in(defs, name, unescape(p)))
        return Param(sp.code, kind, "not" if modifier == "not-in" else None, tuple(values))
    if kind == "token" and modifier in ("above", "below"):
        for p in parts:
            values.extend(_hierarchy(defs, name, p, modifier))
        return Param(sp.code, kind, None, tuple(values))
    if kind == "composite":
        comps = sp.components
        for p in parts:
            pieces = split_escaped(p, "$")
            if len(pieces) != len(comps):
                raise invalid(f"Search parameter '{name}' needs {len(comps)} components separated by '$'", name)
            values.append(CompositeValue(tuple(_value(c.kind, None, piece, name, None, now)
                                               for c, piece in zip(comps, pieces, strict=True))))
        return Param(sp.code, kind, None, tuple(values), tuple(c.kind for c in comps))
    for p in parts:
        values.append(_value(kind, modifier, p, name, target, now))
    code = sp.code + token_kind.OF_TYPE if modifier == "of-type" else sp.code
    return Param(code, kind, modifier, tuple(values))


def _value(kind: str, modifier: str | None, raw: str, name: str, target: str | None,
           now: datetime | None) -> Value:
    if kind in ("token", "quantity", "special"):
        # Their own "|" separators: split before unescaping (near: lat|long|distance|units).
        return KINDS[kind].parse_value(raw, modifier, name)
    if kind == "reference":
        if modifier == "identifier":
            return token_kind.parse_value(raw, None, name)
        return KINDS[kind].parse_value(unescape(raw), modifier, name, target)
    if kind == "date":
        return date_kind.parse_value(unescape(raw), modifier, name, now)
    return KINDS[kind].parse_value(unescape(raw), modifier, name)


# -- names: plain, chained, reverse-chained ---------------------------------------------------


def _lookup(defs: Definitions, type: str, code: str) -> registry.SearchParam | None:
    return registry.params_for(defs, type).get(code)


def criterion(defs: Definitions, type: str, name: str, raw: str, now: datetime | None = None) -> Criterion:
    """One ``name=value`` pair on resources of ``type`` (raises :class:`_Unknown` for unknown names)."""
    if name.startswith("_has:"):
        return _has(defs, type, name, raw, now)
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    sp = _lookup(defs, type, code)
    if sp is None:
        raise _Unknown(name)
    if dot:
        return _chain(defs, type, sp, name, modifier or None, rest, raw, now)
    return _param(defs, type, sp, name, modifier or None, raw, now)


def _chain(defs: Definitions, type: str, sp: registry.SearchParam, name: str, modifier: str | None,
           rest: str, raw: str, now: datetime | None) -> Criterion:
    if sp.type != "reference":
        raise invalid(f"Cannot chain on '{sp.code}': it is a {sp.type} parameter, not a reference", name)
    if modifier:
        if not defs.is_resource_type(modifier) or (sp.targets and modifier not in sp.targets):
            raise invalid(f"Invalid chain target type '{modifier}' for '{sp.code}'", name)
        candidates: tuple[str, ...] = (modifier,)
    else:
        candidates = registry.reference_targets(sp, defs)
    inner_code = rest.partition(".")[0].partition(":")[0]
    inner: Criterion | None = None
    targets: list[str] = []
    for t in candidates:
        isp = None if inner_code.startswith("_has") else _lookup(defs, t, inner_code)
        if isp is None and not inner_code.startswith("_has"):
            continue
        try:
            crit = criterion(defs, t, rest, raw, now)
        except _Unknown:
            continue
        if inner is None:
            inner = crit
        elif crit != inner:
            continue  # a different meaning on this target type: not part of the chain
        targets.append(t)
    if inner is None:
        raise invalid(f"Unknown chained parameter '{rest}' on the targets of '{sp.code}'", name)
    return Chain(sp.code, tuple(targets), inner)


def _has(defs: Definitions, type: str, name: str, raw: str, now: datetime | None) -> Criterion:
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise invalid(f"Malformed '{name}': expected _has:Type:reference:parameter", name)
    _, src, ref_code, rest = parts
    if not defs.is_resource_type(src):
        raise invalid(f"Unknown resource type '{src}' in '{name}'", name)
    ref = _lookup(defs, src, ref_code)
    if ref is None or ref.type != "reference":
        raise invalid(f"'{ref_code}' is not a reference parameter of {src} in '{name}'", name)
    if ref.targets and type not in ref.targets:
        raise invalid(f"{src}.{ref_code} cannot refer to {type} in '{name}'", name)
    try:
        inner = criterion(defs, src, rest, raw, now)
    except _Unknown:
        raise invalid(f"Unknown parameter '{rest}' on {src} in '{name}'", name) from None
    return Has(src, ref_code, inner)


# -- result parameters --------------------------------------------------------------------------


def _sort(defs: Definitions, types: list[str], value: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for part in value.split(","):
        part = part.strip()
        desc = part.startswith("-")
        code = part.lstrip("-")
        if code in ("_id", "_lastUpdated"):
            keys.append(SortKey(code, "special", desc))
            continue
        sps = [_lookup(defs, t, code) for t in types]
        sp = sps[0] if sps else None
        if sp is None or any(s is None or s.type != sp.type for s in sps) or sp.type in ("composite", "special"):
            raise invalid(f"Unknown or unsortable _sort parameter '{code}'", "_sort")
        keys.append(SortKey(code, sp.type, desc))
    return tuple(keys)


def _include(defs: Definitions, types: list[str], value: str, name: str, rev: bool) -> list[Include]:
    iterate = name.endswith((":iterate", ":recurse"))
    if value == "*":
        return [Include(t, code, None, iterate) for t in types
                for code, sp in registry.params_for(defs, t).items() if sp.type == "reference"]
    parts = value.split(":")
    if len(parts) not in (2, 3) or not defs.is_resource_type(parts[0]):
        raise invalid(f"Invalid {name} '{value}': expected SourceType:parameter[:TargetType]", name)
    src, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if target is not None and not defs.is_resource_type(target):
        raise invalid(f"Unknown target type '{target}' in {name} '{value}'", name)
    if not rev and not iterate and src not in types:
        raise invalid(f"{name} '{value}': source type {src} is not the type searched", name)
    if code == "*":
        return [Include(src, c, target, iterate) for c, sp in registry.params_for(defs, src).items()
                if sp.type == "reference"]
    sp = _lookup(defs, src, code)
    if sp is None or sp.type != "reference":
        raise invalid(f"{name} '{value}': '{code}' is not a reference parameter of {src}", name)
    if target is not None and sp.targets and target not in sp.targets:
        raise invalid(f"{name} '{value}': {src}.{code} cannot refer to {target}", name)
    return [Include(src, code, target, iterate)]


def _compartment(defs: Definitions, type: str, compartment: tuple[str, str]) -> Criterion:
    comp_type, comp_id = compartment
    cd = defs.compartment_definition(comp_type)
    if cd is None:
        raise invalid(f"Unknown compartment '{comp_type}'")
    params = next((r.get("param") or [] for r in cd.get("resource", []) if r.get("code") == type), [])
    crits: list[Criterion] = []
    for code in params:
        if code == "{def}":
            crits.append(IdIn((comp_id,)))
            continue
        sp = _lookup(defs, type, code)
        if sp is not None and sp.type == "reference":
            crits.append(Param(code, "reference", None, (ReferenceValue(comp_type, comp_id),)))
    if type == comp_type:
        crits.append(IdIn((comp_id,)))
    if not crits:
        raise invalid(f"Resources of type {type} are not in the {comp_type} compartment")
    return AnyOf(tuple(crits))


def _check_limits(limits: search_limits.SearchLimits, params: list[tuple[str, str]]) -> None:
    # The specific limits first (they say what to change), the overall length last.
    check = search_limits.check
    criteria = [(n, v) for n, v in params if n.partition(":")[0] not in RESULT_PARAMS]
    check(limits, "max_criteria", "the number of search criteria", len(criteria), "Bundle.link")
    total = 0
    for name, value in criteria:
        check(limits, "max_chain_depth", f"the chain depth of '{name}'", name.count("."), name)
        check(limits, "max_has_depth", f"the _has depth of '{name}'", name.count("_has:"), name)
        # An upper bound of the values (escaped commas counted too): cheap. _filter counts its comparisons.
        n = 1 if name == "_filter" else value.count(",") + 1
        if n > limits.max_values:
            n = len(split_escaped(value, ","))
            check(limits, "max_values", f"the number of values of '{name}'", n, name)
        total += n
    check(limits, "max_values_total", "the number of values of all criteria", total, "Bundle.link")
    includes = sum(1 for n, _ in params if n.partition(":")[0] in ("_include", "_revinclude"))
    check(limits, "max_includes", "the number of _include and _revinclude parameters", includes, "_include")
    for name, value in params:
        if name == "_sort":
            check(limits, "max_sort_keys", "the number of _sort keys", len(value.split(",")), "_sort")
    check(limits, "max_query_length", "the length of the query", sum(len(n) + len(v) + 2 for n, v in params),
          "Bundle.link")


def parse(defs: Definitions, type: str | None, params: list[tuple[str, str]], *,
          default_count: int = 50, max_count: int = 1000, strict: bool = False,
          compartment: tuple[str, str] | None = None, now: datetime | None = None,
          limits: search_limits.SearchLimits | None = None, lenient: bool = False) -> SearchQuery:
    limits = limits or search_limits.current()
    _check_limits(limits, params)
    count = min(default_count, max_count)
    offset = 0
    total = "accurate"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    sort_raw: str | None = None
    include_raw: list[tuple[str, str]] = []
    types: list[str] = []
    link: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] = []
    lists: list[tuple[str, ...]] = []
    for name, value in params:
        code = name.partition(":")[0]
        if code == "_count":
            count = min(_nonneg_int("_count", value), max_count)
        elif code == "_offset":
            offset = _nonneg_int("_offset", value)
        elif code in IGNORED:
            continue
        elif code == "_total":
            if value not in TOTAL:
                raise invalid(f"Invalid _total '{value}': use none, estimate or accurate", "_total")
            total = value
            link.append((name, value))
        elif code == "_summary":
            if value not in SUMMARY:
                raise invalid(f"Invalid _summary '{value}': use true, false, text, data or count", "_summary")
            summary = value
            link.append((name, value))
        elif code == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
            link.append((name, value))
        elif code == "_sort":
            sort_raw = value
            link.append((name, value))
        elif code in ("_include", "_revinclude"):
            if name not in (code, f"{code}:iterate", f"{code}:recurse"):
                raise invalid(f"Unknown modifier on '{name}'", name)
            include_raw.append((name, value))
            link.append((name, value))
        elif code == "_list":
            lists.append(_list_ids(name, value))
            link.append((name, value))
        elif code == "_type":
            if type is not None:
                if strict:
                    raise invalid("_type is only allowed in a system-level search", "_type")
                continue
            for t in value.split(","):
                if not defs.is_resource_type(t.strip()):
                    raise invalid(f"Unknown resource type '{t}' in _type", "_type")
                types.append(t.strip())
            link.append((name, value))
        else:
            pending.append((name, value))
    if summary == "count":
        count = 0
    search_types = [type] if type else (types or defs.resource_types())
    criteria: list[Criterion] = []
    budget = search_filter.Budget(limits, len(pending))
    for name, value in pending:
        if name.partition(":")[0] == "_filter":
            found = _filter(defs, type, types, name, value, now, budget, lenient)
            if found is not None:  # None: dropped (lenient)
                criteria.extend(found)
                link.append((name, value))
            continue
        try:
            if type is not None:
                crit = criterion(defs, type, name, value, now)
            else:
                crit = _system_criterion(defs, types, name, value, now)
        except _Unknown:
            if strict:
                raise invalid(f"Unknown or unsupported search parameter '{name}'"
                              + (f" on {type}" if type else ""), name, code="not-supported") from None
            continue
        criteria.append(crit)
        link.append((name, value))
    if compartment is not None and type is not None:
        criteria.insert(0, _compartment(defs, type, compartment))
    sort = _sort(defs, search_types, sort_raw) if sort_raw else ()
    include: list[Include] = []
    revinclude: list[Include] = []
    for name, value in include_raw:
        rev = name.startswith("_revinclude")
        (revinclude if rev else include).extend(_include(defs, search_types, value, name, rev))
    needs_types = type is None and not types and (criteria or sort or include or revinclude)
    return SearchQuery(
        type=type,
        params=tuple(criteria),
        sort=sort,
        count=count,
        offset=offset,
        total=total,
        types=tuple(types) if types or not needs_types else tuple(defs.resource_types()),
        include=tuple(include),
        revinclude=tuple(revinclude),
        summary=summary,
        elements=elements,
        link_params=tuple(link),
        lists=tuple(lists),
    )


def _list_ids(name: str, value: str) -> tuple[str, ...]:
    """``_list=42`` or ``_list=42,43`` (search.html#list): the ids of the Lists (any of them)."""
    if name != "_list":
        raise invalid(f"Unknown modifier on '{name}'", name)
    ids = tuple(unescape(p).strip() for p in split_escaped(value, ","))
    for i in ids:
        if i.startswith("$"):
            raise invalid(f"The functional list '{i}' is not supported: give the id of a List", name,
                          code="not-supported")
        if not _LIST_ID.fullmatch(i):
            raise invalid(f"Invalid _list '{value}': expected the id of a List", name)
    return ids


def _filter(defs: Definitions, type: str | None, types: list[str], name: str, value: str, now: datetime | None,
            budget: search_filter.Budget, lenient: bool) -> tuple[Criterion, ...] | None:
    """``_filter`` (search_filter.html): its comparisons are parsed as the plain parameters they mean."""
    if name != "_filter":
        raise invalid(f"Unknown modifier on '{name}'", name)

    def resolve(n: str, v: str) -> Criterion:
        try:
            return criterion(defs, type, n, v, now) if type is not None else _system_criterion(defs, types, n, v, now)
        except _Unknown:
            raise invalid(f"Unknown search parameter '{n}'", "_filter", code="not-supported") from None

    return search_filter.criteria(defs, [type] if type else types, value, resolve, budget, lenient)


def _system_criterion(defs: Definitions, types: list[str], name: str, value: str, now: datetime | None) -> Criterion:
    """A parameter of a system search: common to all the types searched (search.html#all)."""
    if not types:
        code = name.partition(".")[0].partition(":")[0]
        if code not in registry.common_params(defs):
            raise _Unknown(name)
        return criterion(defs, "Resource", name, value, now)
    crits = [criterion(defs, t, name, value, now) for t in types]
    if any(c != crits[0] for c in crits[1:]):
        raise invalid(f"Search parameter '{name}' does not mean the same on every type in _type", name)
    return crits[0]
