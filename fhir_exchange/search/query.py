"""The typed search query (https://hl7.org/fhir/R4/search.html#ptypes): what a FHIR search asks,
independent of any store.

Parsing (:func:`fhir_exchange.search.parse.parse`) is pure and turns every raw value into a typed value
object here, so that malformed input fails with a 400 at parse time and every store (SQLite, MongoDB,
the in-memory matcher) compiles the same already-validated model.

Shape of a query: ``criteria`` are ANDed; each :class:`Param` ORs its ``values``. A criterion is a
:class:`Param` (a search parameter of the searched type), a :class:`Chain` (a reference parameter whose
target matches an inner criterion), a :class:`Has` (reverse chain) or an :class:`AnyOf` (a disjunction,
used for compartments and ``_filter``'s ``or``); ``_filter`` adds :class:`AllOf` and :class:`Not`.

Dates are half-open UTC ranges ``[low, high)`` in integer microseconds since 1970-01-01T00:00Z, so
that each precision (year ... fraction of a second) is its own range and comparisons are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATE_MIN: int = -(2**62)
DATE_MAX: int = 2**62
NUM_MIN: float = -1e308
NUM_MAX: float = 1e308

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``system|code``. ``system`` None: any system; "" : no system. ``code`` None: any code.
    ``text`` (normalised) is set for ``:text`` searches instead of system/code."""

    system: str | None = None
    code: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str  # normalised (case- and accent-folded): prefix / :contains
    raw: str  # as given: :exact


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    low: int  # microseconds, inclusive
    high: int  # microseconds, exclusive


@dataclass(frozen=True, slots=True)
class NumberValue:
    prefix: str
    value: float
    low: float  # implicit precision range of the value, [low, high)
    high: float


@dataclass(frozen=True, slots=True)
class QuantityValue:
    number: NumberValue
    system: str | None = None  # None: any
    code: str | None = None  # None: any; matched against code, or unit when system is None
    # A UCUM code's canonical form: the dimension's key and the number in its canonical unit (also
    # matched against the canonical form of the indexed quantities: 5.4 mg finds 0.0054 g).
    canon: str | None = None
    canon_number: NumberValue | None = None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A local reference (type and/or id, optional version) or an absolute/canonical ``url``."""

    type: str | None = None
    id: str | None = None
    version: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class UriValue:
    uri: str


@dataclass(frozen=True, slots=True)
class NearValue:
    """``near`` (location.html#positional): a point in degrees and a great-circle radius in km."""

    lat: float
    lon: float
    km: float


@dataclass(frozen=True, slots=True)
class MissingValue:
    missing: bool


@dataclass(frozen=True, slots=True)
class CompositeValue:
    parts: tuple[Value, ...]


Value = (TokenValue | StringValue | DateValue | NumberValue | QuantityValue | ReferenceValue | UriValue
         | NearValue | MissingValue | CompositeValue)


@dataclass(frozen=True, slots=True)
class Param:
    """One search parameter occurrence on resources of the enclosing type.

    ``type`` is SearchParameter.type. ``modifier`` is what remains after parsing: ``missing``,
    ``exact``, ``contains``, ``text``, ``not``, ``above``, ``below``, ``identifier``, ``of-type`` or None
    (``:in``/``:not-in`` and token ``:above``/``:below`` are expanded into plain or ``not`` token values;
    ``:[type]`` into :attr:`ReferenceValue.type`). ``components`` give the kinds of a composite's parts.
    """

    code: str
    type: str
    modifier: str | None
    values: tuple[Value, ...]
    components: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Chain:
    """``code:Type.inner``: resources whose reference ``code`` points at a ``target_types`` resource
    matching ``criterion`` (evaluated on that target type)."""

    code: str
    target_types: tuple[str, ...]
    criterion: Criterion


@dataclass(frozen=True, slots=True)
class Has:
    """``_has:Type:code:inner``: some resource of ``type`` whose reference ``code`` points at this
    resource matches ``criterion``."""

    type: str
    code: str
    criterion: Criterion


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A disjunction of criteria (compartment membership: any of the compartment's parameters)."""

    criteria: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class IdIn:
    """``_id``: the logical id is one of ``ids`` (``negate`` for ``_id:not``). With ``type``, only
    resources of that type match (a system-level ``_list`` names ids of several types)."""

    ids: tuple[str, ...]
    negate: bool = False
    type: str | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    """A conjunction of criteria (``and`` inside a ``_filter``; top-level criteria are ANDed already)."""

    criteria: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The complement of ``criterion`` among the (visible, live) resources of the searched type (``not``
    of a ``_filter``, :mod:`fhir_exchange.search.filter`)."""

    criterion: Criterion


Criterion = Param | Chain | Has | AnyOf | IdIn | AllOf | Not


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    type: str  # SearchParameter.type, or "special" for _id / _lastUpdated
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:code[:Target]`` / ``_revinclude`` (``iterate`` for ``:iterate``)."""

    source_type: str
    code: str
    target_type: str | None = None
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which stored resources one caller may see; every store compiles it into every subquery of a
    search or history (matches, totals, chains, ``_has``, includes, sort walks), never as a filter after.

    A resource is visible only if its type is readable (one of ``types``, the caller's scopes; every
    type when ``types`` is None) AND it is owned, shared or granted: its owner is one of
    ``institutions``, or its type is one of ``shared_types`` (the network's directory and the
    conformance resources), or a grant to one of ``institutions`` covers it and is still valid at ``at``
    (grant ``until`` is None or later than ``at``). An empty ``types`` makes nothing visible. No
    visibility (``None`` on a query) means everything: the local/system actor.
    """

    institutions: frozenset[str] = frozenset()
    shared_types: frozenset[str] = frozenset()
    at: str = ""  # FHIR instant the grants are judged at (the request's time)
    types: frozenset[str] | None = None  # the only types the caller may read (its scopes); None: every type

    def readable(self, type: str) -> bool:
        """Whether resources of ``type`` may be read at all (before ownership, sharing and grants)."""
        return self.types is None or type in self.types


@dataclass(frozen=True, slots=True)
class SearchQuery:
    type: str | None  # None: system-level search across ``types`` (all types when empty)
    params: tuple[Criterion, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    offset: int = 0
    total: str = "accurate"  # none | estimate | accurate
    types: tuple[str, ...] = ()  # _type
    include: tuple[Include, ...] = field(default=())
    revinclude: tuple[Include, ...] = field(default=())
    summary: str | None = None
    elements: tuple[str, ...] = ()
    # The recognised (name, value) pairs, in request order, without _count/_offset: the self link.
    link_params: tuple[tuple[str, str], ...] = ()
    visibility: Visibility | None = None  # None: everything (the system actor)
    # ``_list`` (search.html#list): ids of Lists whose entry.item the results must be (each ANDed, each a
    # comma-separated OR). A store never sees them: the repository reads the Lists as the caller and
    # turns them into :class:`IdIn` criteria (interactions/repository.py, ``resolve_lists``).
    lists: tuple[tuple[str, ...], ...] = ()

    def search_types(self, all_types: list[str]) -> list[str]:
        if self.type:
            return [self.type]
        return list(self.types) or all_types
