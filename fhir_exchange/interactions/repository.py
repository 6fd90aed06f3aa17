"""The request-scoped repository: the only way interactions, Bundles and messages touch the store.

It plays the role Medplum's ``FhirRepository`` plays. A :class:`Repository` is made per request for
its actor; inside :meth:`Repository.unit` it is bound to one store unit of work, which every Bundle
entry and message entry of that request joins. It owns:

- **visibility**: every read, vread, history and search carries the actor's
  :class:`~fhir_exchange.search.query.Visibility`, which the stores compile into every subquery; a
  resource the actor may not see reads as absent (404, never 403);
- **conditional matching, once**: :meth:`Repository.match` parses the criteria strictly, drops result
  parameters, locks the criteria for the unit of work (race-free conditional create) and searches as
  the actor; a transaction's plan and the entries it then dispatches get the same answer, because
  matches are remembered for the unit of work;
- **the single write path**: :meth:`Repository.prepare` (validation against the core definition,
  ``meta.profile``, required and selected profiles, write rules) gives a :class:`Draft`, and only a
  draft can be written by :meth:`Repository.write`: guards (actor, stored version, new version) →
  store write (server-owned ``meta``, the owner) → write hooks in the same unit of work → commit hooks
  after the commit. Deletes take the same path with no draft.

An update whose content equals the stored version (apart from ``meta.versionId`` and
``meta.lastUpdated``) writes nothing and answers the current version, as HAPI FHIR does.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qsl

from fhir_exchange.clock import instant
from fhir_exchange.errors import Category, FhirError, Issue, invalid, precondition_failed
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.hooks import Change
from fhir_exchange.interactions.services import Services
from fhir_exchange.search.params import reference
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import AnyOf, Criterion, IdIn, SearchQuery, Visibility
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.audit import AuditTrail, Decision
from fhir_exchange.store.port import NEW, HistoryPage, HistoryQuery, ResourceVersion, SearchResult, UnitOfWork

# Issue codes meaning "the JSON does not fit the structure" (400); everything else that fails
# validation breaks a rule of the content (422), as HAPI FHIR and Firely Server answer.
STRUCTURAL_CODES = frozenset({"structure", "required", "value", "invalid", "too-long"})

# Result parameters select or shape a page; they never narrow what a condition matches, so they are
# dropped from the criteria (``_offset`` would otherwise hide matches, ``_count`` shrink them).
_NOT_CRITERIA = frozenset({"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_format", "_pretty",
                           "_include", "_revinclude", "_contained", "_containedType"})


def criteria_pairs(criteria: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a conditional criteria string (``If-None-Exist``, a conditional
    reference): ``identifier=a|b``, ``?identifier=...`` or ``Patient?identifier=...``."""
    criteria = criteria.strip().lstrip("?")
    if "?" in criteria:  # "Patient?identifier=..." as some clients send in If-None-Exist
        criteria = criteria.split("?", 1)[1]
    pairs = parse_qsl(criteria, keep_blank_values=True)
    if not pairs:
        raise invalid("Conditional criteria are empty")
    return pairs


class ReadPort(Protocol):
    """What both a store and a unit of work answer: the reads a repository makes."""

    async def read(self, type: str, id: str) -> ResourceVersion | None: ...

    async def search(self, query: Any) -> SearchResult: ...

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Draft:
    """A resource that passed validation, ready for :meth:`Repository.write` (the only way to get one is
    :meth:`Repository.prepare`, so no write skips validation)."""

    type: str
    resource: dict[str, Any]
    issues: tuple[Issue, ...]  # warnings and information, for Prefer: return=OperationOutcome


@dataclass(frozen=True, slots=True)
class Written:
    version: ResourceVersion
    issues: tuple[Issue, ...]
    changed: bool = True  # False: the update changed nothing and the current version stands


@dataclass(slots=True)
class Unit:
    """One store unit of work shared by every interaction of a request (a transaction's entries, a
    message's entries), what to run once it commits, and the conditional matches made in it."""

    uow: UnitOfWork
    commit_hooks: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    matches: dict[str, list[ResourceVersion]] = field(default_factory=dict)
    checks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)  # before the commit


class Repository:
    def __init__(self, svc: Services, actor: Actor, unit: Unit | None = None,
                 trail: AuditTrail | None = None) -> None:
        self.svc = svc
        self.actor = actor
        self._unit = unit
        self.trail = trail if trail is not None else AuditTrail()
        self._visibility: Visibility | None = None
        self._visibility_known = False

    # -- units of work ----------------------------------------------------------------------------

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Repository]:
        """This repository bound to a unit of work: the one it is in, or a new store transaction
        whose commit hooks run after it commits (and are dropped if it rolls back)."""
        if self._unit is not None:
            yield self
            return
        async with self.svc.store.transaction() as uow:
            unit = Unit(uow)
            yield Repository(self.svc, self.actor, unit, self.trail)
            # Checks queued by guards run after every write of the unit, before it commits.
            await Repository(self.svc, self.actor, unit, self.trail).run_checks()
        for fn in unit.commit_hooks:
            result = fn()
            if inspect.isawaitable(result):
                await result

    @property
    def in_unit(self) -> Unit | None:
        return self._unit

    @property
    def uow(self) -> UnitOfWork:
        """The unit of work (for hooks, which act as the system inside it)."""
        if self._unit is None:
            raise RuntimeError("Repository.uow outside a unit of work: use `async with repo.unit()`")
        return self._unit.uow

    def after_commit(self, fn: Callable[[], Awaitable[None] | None]) -> None:
        if self._unit is None:
            raise RuntimeError("after_commit outside a unit of work")
        self._unit.commit_hooks.append(fn)

    async def run_checks(self) -> None:
        """Run the checks queued for the end of the unit of work now (one may queue another: a
        cascade, so until none is left). A message handler runs them itself, so that a broken rule is
        answered by a fatal-error response message like the other rules of the message."""
        unit = self._require_unit()
        while unit.checks:
            key = next(iter(unit.checks))
            await unit.checks.pop(key)()

    def before_commit(self, key: str, check: Callable[[], Awaitable[None]]) -> None:
        self._require_unit().checks.setdefault(key, check)

    async def write_as_system(self, type: str, id: str, resource: dict[str, Any] | None, *,
                              method: str) -> ResourceVersion:
        system = Repository(self.svc, SYSTEM, self._require_unit(), self.trail)
        current = await system.current(type, id)
        draft = system.prepare(type, resource) if resource is not None else None
        return (await system.write(draft, type, id, current=current, method=method)).version

    # -- visibility -------------------------------------------------------------------------------

    def now(self) -> str:
        return instant(self.svc.clock.now())

    @property
    def visibility(self) -> Visibility | None:
        """What the actor may see (None: everything, as for the system actor), decided once per repository."""
        if not self._visibility_known:
            self._visibility = None if self.actor.system else self.svc.access.visibility(self.actor, self.now())
            self._visibility_known = True
        return self._visibility

    async def visible(self, v: ResourceVersion) -> bool:
        """Whether the actor may see ``v``; the decision and its reason go to the request's audit trail."""
        vis = self.visibility
        if vis is None:
            return True
        target = f"{v.type}/{v.id}"
        if vis.types is not None and v.type not in vis.types:
            self.trail.decide(Decision(target, False, "the token's scopes do not cover the type", v.owner))
            return False
        if v.owner is not None and v.owner in vis.institutions:
            reason = "owner"
        elif v.type in vis.shared_types:
            reason = "shared directory"
        elif await self._reader(v.type).granted(vis, v.type, v.id):
            reason = "grant"
        else:
            self.trail.decide(Decision(target, False, "not visible to the institution", v.owner))
            return False
        self.trail.decide(Decision(target, True, reason, v.owner))
        return True

    def _reader(self, type: str | None) -> ReadPort:
        """Where resources of ``type`` are read: AuditEvents from the audit store, the rest from the
        unit of work when there is one (it sees its own writes), else the store."""
        if type == "AuditEvent" and self.svc.audit_store is not None:
            return self.svc.audit_store
        return self._unit.uow if self._unit is not None else self.svc.store

    # -- reads ------------------------------------------------------------------------------------

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        """The current version (a deletion marker included) if the actor may see it; else None.
        Inside a unit of work it reads what earlier entries of the unit wrote."""
        v = await self._reader(type).read(type, id)
        if v is None or not await self.visible(v):
            return None
        return v

    async def access(self, type: str, id: str) -> ResourceVersion | None:
        """:meth:`read`, recorded in the audit trail as an access (the read interactions use it)."""
        v = await self.read(type, id)
        if v is not None:
            self.trail.touched(v, "R")
        return v

    async def vread(self, type: str, id: str, version_id: int) -> tuple[ResourceVersion | None, bool]:
        """(the version, whether the resource is known to the actor). Versions are committed state."""
        current = await self.read(type, id)
        if current is None:
            return None, False
        store = self.svc.audit_store if type == "AuditEvent" and self.svc.audit_store is not None else self.svc.store
        v = await store.vread(type, id, version_id)
        if v is not None:
            self.trail.touched(v, "R")
        return v, True

    async def history(self, query: HistoryQuery) -> HistoryPage:
        store = self.svc.audit_store if query.type == "AuditEvent" and self.svc.audit_store is not None \
            else self.svc.store
        page = await store.history(replace(query, visibility=self.visibility))
        for v in page.versions:
            self.trail.touched(v, "R", {})
        return page

    async def search(self, query: SearchQuery) -> SearchResult:
        """Search as the actor; inside a unit of work it sees what earlier entries wrote."""
        query = reference.localise_query(query, self.svc.settings.local_base_urls)
        if query.lists:
            query = await self.resolve_lists(query)
        query = replace(query, visibility=self.visibility)
        result = await self._reader(query.type).search(query)
        for v in (*result.matches, *result.includes):
            self.trail.touched(v, "R", {})  # the patients of a search come from its criteria, not its bodies
        return result

    async def resolve_lists(self, query: SearchQuery) -> SearchQuery:
        """``_list`` (search.html#list) as ``_id`` criteria: the items of each List, read as the actor
        (a List it may not see, or none, lists nothing). Each ``_list`` is ANDed; its comma-separated
        Lists are ORed. A system-level search keeps to the types the Lists name."""
        criteria: list[Criterion] = list(query.params)
        types = set(query.types or self.svc.definitions.resource_types())
        for ids in query.lists:
            refs: set[tuple[str, str]] = set()
            for list_id in ids:
                refs |= await self._list_items(list_id)
            if query.type is not None:
                criteria.append(IdIn(tuple(sorted(i for t, i in refs if t == query.type))))
                continue
            types &= {t for t, _ in refs}
            criteria.append(AnyOf(tuple(IdIn(tuple(sorted(i for t2, i in refs if t2 == t)), type=t)
                                        for t in sorted({t for t, _ in refs}))))
        if query.type is None and types:
            return replace(query, params=tuple(criteria), types=tuple(sorted(types)), lists=())
        # (No type left: the empty AnyOf matches nothing; ``types`` stays, an empty one means every type.)
        return replace(query, params=tuple(criteria), lists=())

    async def _list_items(self, list_id: str) -> set[tuple[str, str]]:
        found = await self.read("List", list_id)
        if found is None or found.deleted:
            return set()
        bases = self.svc.settings.local_base_urls
        out: set[tuple[str, str]] = set()
        for entry in jsonio.loads(found.body).get("entry") or ():
            item = entry.get("item") if isinstance(entry, dict) and not entry.get("deleted") else None
            ref = item.get("reference") if isinstance(item, dict) else None
            if not isinstance(ref, str):
                continue
            t, i, _v, url = reference.split_reference(ref)
            if url is not None:
                local = reference.local_reference(url, bases)
                t, i = (local[0], local[1]) if local else (None, None)
            if t is not None and i is not None:
                out.add((t, i))
        return out

    # -- conditional matching ---------------------------------------------------------------------

    async def match(self, type: str, pairs: list[tuple[str, str]]) -> list[ResourceVersion]:
        """What conditional criteria match (at most two: enough to tell none, one and several), as
        the actor sees them, inside the unit of work under a lock on the criteria. Remembered for the
        unit of work, so a transaction's plan and the entries it dispatches agree."""
        unit = self._require_unit()
        # A condition without criteria would match every resource of the type: a conditional delete,
        # update or patch of "DELETE [base]/Patient" must not touch whatever Patient happens to be alone.
        pairs = [(k, v) for k, v in pairs if k.split(":", 1)[0] not in _NOT_CRITERIA]
        if not pairs:
            raise invalid(f"A conditional interaction on {type} needs search criteria (none were given)")
        key = f"{type}?{sorted(pairs)}"
        known = unit.matches.get(key)
        if known is not None:
            return known
        query = parse(self.svc.definitions, type, [*pairs, ("_count", "2")], strict=True,
                      default_count=2, max_count=2)
        await unit.uow.lock_key(key)
        found = (await self.search(query)).matches
        unit.matches[key] = found
        return found

    async def match_one(self, type: str, pairs: list[tuple[str, str]], what: str) -> ResourceVersion | None:
        """The single match (None when nothing matches); several answer 412 naming ``what``."""
        found = await self.match(type, pairs)
        if len(found) > 1:
            raise precondition_failed(f"{what}: the criteria match more than one {type}")
        return found[0] if found else None

    # -- the write path ---------------------------------------------------------------------------

    def profiles(self, resource: dict[str, Any]) -> list[str]:
        """The profiles the server requires of this resource, besides its own ``meta.profile`` (which
        the validator reads itself): per-type settings, and those the selectors (consult rules) pick."""
        rt = resource.get("resourceType")
        out = [url for type, url in self.svc.settings.required_profile_pairs if type == rt]
        for select in self.svc.hooks.profile_selectors:
            out.extend(u for u in select(resource) if u not in out)
        return out

    def check(self, resource: dict[str, Any], *, profiles: list[str] | None = None) -> list[Issue]:
        """Every issue validation finds in ``resource`` (the validator, then the write rules of its type)."""
        rt = resource.get("resourceType")
        issues = self.svc.validator.validate(resource, profiles=profiles if profiles is not None
                                             else self.profiles(resource), resource_type=rt if isinstance(rt, str)
                                             else None)
        for rule in self.svc.hooks.rules.get(str(rt), ()):
            issues = [*issues, *rule(resource)]
        return issues

    def prepare(self, type: str, resource: dict[str, Any]) -> Draft:
        """Validate ``resource`` for writing: raise on errors (400 when every error is structural,
        else 422), or give the draft with its warnings."""
        issues = self.check(resource)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            structural = all(i.code in STRUCTURAL_CODES for i in errors)
            raise FhirError(Category.INVALID if structural else Category.UNPROCESSABLE, errors[0].diagnostics,
                            issues=issues)
        return Draft(type, resource, tuple(issues))

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        """The stored version a write replaces, whoever may see it (the guards decide who may write)."""
        return await self._require_unit().uow.read(type, id)

    async def write(self, draft: Draft | None, type: str, id: str, *, current: ResourceVersion | None,
                    method: str) -> Written:
        """Write ``draft`` as ``type/id`` (``draft`` None: delete ``current``) through guards, the store,
        the write hooks and (after the commit) the commit hooks."""
        unit = self._require_unit()
        hooks = self.svc.hooks
        after = draft.resource if draft is not None else None
        issues = draft.issues if draft is not None else ()
        change = Change(self.actor, type, id, current, after, method)
        for guard in hooks.guards:
            await guard(change, self)
        at = self._after(current)
        if after is None:
            if current is None or current.deleted:
                raise RuntimeError("write(None) deletes a live current version")
            version = ResourceVersion(type, id, current.version_id + 1, at, True, b"", "DELETE", current.owner)
            await unit.uow.delete(version, expected_version=current.version_id)
        else:
            stored, body = self._stored(type, id, after, current, at)
            if current is not None and not current.deleted and _same_content(current.body, stored):
                return Written(current, issues, changed=False)
            owner = current.owner if current is not None and current.owner is not None else self.actor.institution
            version = ResourceVersion(type, id, (current.version_id + 1) if current else 1,
                                      stored["meta"]["lastUpdated"], False, body, method, owner)
            await unit.uow.put(version, stored, expected_version=current.version_id if current else NEW)
        self.trail.touched(version, {"POST": "C", "DELETE": "D"}.get(method, "U"), after)
        for hook in hooks.on_write:
            await hook(change, version, self)
        for commit_hook in hooks.after_commit:
            self.after_commit(_bind(commit_hook, change, version))
        return Written(version, issues)

    async def record(self, type: str, resource: dict[str, Any]) -> ResourceVersion:
        """Store a resource the server makes (a Provenance) in this unit of work, owned by the actor's
        institution: no validation, no guards, no hooks (the server's own record of a write)."""
        unit = self._require_unit()
        id = self.svc.clock.new_id()
        at = self._after(None)
        stored, body = self._stored(type, id, resource, None, at)
        version = ResourceVersion(type, id, 1, at, False, body, "POST", self.actor.institution)
        await unit.uow.put(version, stored, expected_version=NEW)
        return version

    def _after(self, current: ResourceVersion | None) -> str:
        now = self.now()
        # A clock step back must not reorder history.
        return current.last_updated if current is not None and now < current.last_updated else now

    @staticmethod
    def _stored(type: str, id: str, resource: dict[str, Any], current: ResourceVersion | None, at: str
                ) -> tuple[dict[str, Any], bytes]:
        """The resource as stored: the server owns ``meta.versionId`` and ``meta.lastUpdated``."""
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str((current.version_id + 1) if current else 1)
        meta["lastUpdated"] = at
        out = {"resourceType": type, "id": id, "meta": meta}
        out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
        try:
            body = jsonio.dumps(out)
        except TypeError as exc:  # orjson parses 1024 levels of nesting but writes only 254: refuse, not 500
            raise invalid(f"{type}/{id} cannot be stored: {exc} (JSON nested deeper than 254 levels)",
                          type, code="too-costly") from None
        return out, body

    def _require_unit(self) -> Unit:
        if self._unit is None:
            raise RuntimeError("writes and conditional matching happen inside `async with repo.unit()`")
        return self._unit


def _bind(hook: Callable[[Change, ResourceVersion], Awaitable[None] | None], change: Change,
          version: ResourceVersion) -> Callable[[], Awaitable[None] | None]:
    return lambda: hook(change, version)


def _without_version_meta(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("meta"), dict):
        meta = {k: v for k, v in doc["meta"].items() if k not in ("versionId", "lastUpdated")}
        doc = {k: v for k, v in doc.items() if k != "meta"}
        if meta:
            doc["meta"] = meta
    return doc


def _same_content(stored_body: bytes, new: dict[str, Any]) -> bool:
    """Whether ``new`` says what the stored version says, apart from the server-owned meta (key order
    aside; decimals compared as written, so 1.10 → 1.1 is a change)."""
    return jsonio.canonical(_without_version_meta(jsonio.loads(stored_body))) == \
        jsonio.canonical(_without_version_meta(new))
