"""transaction: https://hl7.org/fhir/R4/http.html#transaction

``POST [base]`` with a ``transaction`` Bundle: all entries succeed or none does. The Bundle is first
planned, then every entry is executed through :meth:`Router.dispatch` (the same path as an HTTP
request, as the request's actor) inside ONE unit of work, in the order the spec prescribes
(http.html#trules): DELETE, then POST, then PUT/PATCH, then GET/HEAD; the response entries keep the
request's order.

The plan:
- Ids: a POST gets a server id before anything is written (:attr:`FhirRequest.assigned_id`), so that
  ``urn:uuid:`` / ``urn:oid:`` fullUrls (and a POST's own absolute fullUrl) can be replaced in every
  resource of the Bundle first (:mod:`fhir_exchange.bundles.references`); each resource is validated
  once, by the interaction that writes it.
- Conditional create/update/patch/delete (``ifNoneExist``, ``PUT Type?criteria``...) are matched by the
  repository inside the unit of work (serialised per criteria by the store, so concurrent
  transactions with the same conditional creates yield one resource); the repository remembers each
  match for the unit of work, so the dispatched entry finds exactly what the plan found. Two POSTs with
  the same ``ifNoneExist`` are one resource named twice and are refused like any other overlap.
- Conditional references (``Patient?identifier=...``) resolve to the single match: none is a 400,
  several a 412. A criteria equal to the ``ifNoneExist`` of a POST in the same Bundle resolves to that
  entry's resource, as HAPI FHIR does.
- Two entries on the same resource (including identities found by conditional operations) are a 400.
- Any failure rolls everything back and answers one OperationOutcome naming the entry (index and
  fullUrl) with the status the entry itself would have had (e.g. 412, 422).
- No entry cap: the work is a few passes over the entries with dicts keyed by fullUrl and identity,
  so memory is proportional to the Bundle.
- GET/HEAD entries read inside the unit of work, so they see what the transaction wrote (read and
  search; vread and history read committed state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_exchange.bundles.entries import Entry, bundle_entries, entry_request, located, response_bundle, response_entry
from fhir_exchange.bundles.references import conditional, is_urn, references, rewrite
from fhir_exchange.errors import Category, FhirError, invalid, precondition_failed
from fhir_exchange.interactions.common import check_id, check_type, require_resource_body
from fhir_exchange.interactions.repository import Repository, criteria_pairs
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.update import check_body_id


@dataclass(slots=True)
class _Step:
    entry: Entry
    type: str = ""
    id: str | None = None  # the resolved target
    matched: bool = False  # a conditional create that found its resource: nothing of it is written


async def process_transaction(router: Router, req: FhirRequest, bundle: dict[str, Any]) -> FhirResponse:
    entries = parse_entries(bundle, req)
    repo = Repository(router.services, req.actor, trail=req.trail)
    check_profiles(repo, bundle)
    async with repo.unit() as w:
        responses = await run_entries(router, w, entries)
    out = []
    for entry, resp in zip(entries, responses, strict=True):
        if entry.method == "HEAD":
            resp.body = resp.resource = None
        out.append(response_entry(resp))
    return response_bundle("transaction-response", router.services.clock.new_id(), out)


def check_profiles(repo: Repository, bundle: dict[str, Any]) -> None:
    """A transaction carrying a consult is held to the consult transaction Bundle profile (the rules
    across its entries) before any entry is processed, as ``$validate`` of the same Bundle would be."""
    profiles = repo.profiles(bundle)
    if not profiles:
        return
    issues = repo.svc.validator.validate(bundle, profiles=profiles, resource_type="Bundle")
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        raise FhirError(Category.UNPROCESSABLE, errors[0].diagnostics, issues=errors)


def parse_entries(bundle: dict[str, Any], req: FhirRequest) -> list[Entry]:
    raw_entries = bundle_entries(bundle)
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        entry = entry_request(raw, index, req)
        if entry.full_url:
            if entry.full_url in seen:  # bdl-7
                raise invalid(f"Entries {seen[entry.full_url]} and {index} have the same fullUrl "
                              f"'{entry.full_url}' (bdl-7)", f"Bundle.entry[{index}].fullUrl")
            seen[entry.full_url] = index
        entries.append(entry)
    return entries


async def run_entries(router: Router, w: Repository, entries: list[Entry]) -> list[FhirResponse]:
    """Plan ``entries`` as one transaction and execute them through the router in the unit of work of
    ``w``; the answers in entry order."""
    svc = router.services
    unit = w.in_unit
    assert unit is not None
    responses: dict[int, FhirResponse] = {}  # by entry index
    claimed: dict[str, int] = {}
    mapping: dict[str, str] = {}
    pending_creates: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    deletes: list[_Step] = []
    posts: list[_Step] = []
    puts: list[_Step] = []  # PUT and PATCH, in Bundle order
    reads: list[Entry] = []

    def claim(key: str, step: _Step) -> None:
        other = claimed.setdefault(key, step.entry.index)
        if other != step.entry.index:
            raise invalid(f"Entries {other} and {step.entry.index} both act on {key}: a transaction may "
                          f"touch a resource once", step.entry.where())

    async def run(entry: Entry) -> None:
        try:
            responses[entry.index] = await router.dispatch(entry.req, unit)
        except FhirError as err:
            raise located(err, entry) from None

    for entry in entries:
        try:
            seg = entry.segments
            if entry.method in ("GET", "HEAD") or (entry.method == "POST" and seg[-1:] == ("_search",)):
                reads.append(entry)
                continue
            if not seg or len(seg) > 2 or seg[-1].startswith(("$", "_")):
                raise invalid(f"{entry.method} {entry.req.path} is not a create, update, patch or delete",
                              f"{entry.where()}.request.url")
            step = _Step(entry, seg[0], seg[1] if len(seg) == 2 else None)
            check_type(svc, step.type)
            if step.id is not None:
                check_id(step.id)
            elif entry.method != "POST" and not entry.req.query:
                raise invalid(f"{entry.method} {step.type} needs an id or search criteria",
                              f"{entry.where()}.request.url")
            if entry.method == "POST" and step.id is not None:
                raise invalid("A POST entry creates: its url is the resource type only", f"{entry.where()}.request.url")
            {"DELETE": deletes, "POST": posts, "PUT": puts, "PATCH": puts}[entry.method].append(step)
        except FhirError as err:
            raise located(err, entry) from None

    # 1. DELETE: targets claimed, then executed (conditional creates below must not match what they delete).
    for step in deletes:
        try:
            if step.id is None:
                found = await w.match_one(step.type, step.entry.req.query, "Conditional delete refused")
                step.id = found.id if found is not None else None
            if step.id is not None:
                claim(f"{step.type}/{step.id}", step)
        except FhirError as err:
            raise located(err, step.entry) from None
        await run(step.entry)

    # 2. Identities of everything POST / PUT / PATCH will write, so references can be replaced first.
    for step in posts:
        entry = step.entry
        try:
            resource = dict(require_resource_body(entry.req, step.type))
            resource.pop("id", None)
            entry.req.body = resource
            condition = entry.req.header("if-none-exist")
            if condition:
                pairs = criteria_pairs(condition)
                key = (step.type, tuple(sorted(pairs)))
                claim(f"{step.type}?{'&'.join(f'{k}={v}' for k, v in key[1])}", step)
                found = await w.match_one(step.type, pairs, f"If-None-Exist '{condition}'")
                if found is not None:
                    step.id, step.matched = found.id, True
                    claim(f"{step.type}/{step.id}", step)
                else:
                    step.id = entry.req.assigned_id = svc.clock.new_id()
                    pending_creates[key] = step.id
            else:
                step.id = entry.req.assigned_id = svc.clock.new_id()
            _map_full_url(mapping, entry, step.type, step.id)
        except FhirError as err:
            raise located(err, entry) from None
    for step in puts:
        entry = step.entry
        try:
            if entry.method == "PUT":
                resource = require_resource_body(entry.req, step.type)
                if step.id is None:
                    body_id = resource.get("id")
                    if body_id is not None:
                        check_id(body_id)
                    found = await w.match_one(step.type, entry.req.query, "Conditional update refused")
                    step.id = found.id if found is not None else (body_id or svc.clock.new_id())
                    entry.req.assigned_id = step.id
                else:
                    check_body_id(resource, step.id)
                _map_full_url(mapping, entry, step.type, step.id)
            elif step.id is None:
                found = await w.match_one(step.type, entry.req.query, "Conditional patch refused")
                if found is None:
                    raise FhirError(Category.NOT_FOUND, f"No {step.type} matches the criteria")
                step.id = found.id
            claim(f"{step.type}/{step.id}", step)
        except FhirError as err:
            raise located(err, entry) from None

    # 3. Conditional references, resolved once per criteria string; then every link replaced.
    writes = [s for s in (*posts, *puts) if s.entry.method in ("POST", "PUT") and not s.matched]
    base = entries[0].req.base_url if entries else ""
    for step in writes:
        try:
            for ref in references(step.entry.req.body):
                if ref in mapping:
                    continue
                if (cond := conditional(ref)) is not None:
                    mapping[ref] = await _resolve_conditional(w, cond, pending_creates)
                elif base and ref.startswith(base + "/"):
                    # A full URL on this server's own base names a resource it holds: stored relative, so
                    # that search, the consult rules and access see the same link as "Type/id".
                    mapping[ref] = ref[len(base) + 1:]
        except FhirError as err:
            raise located(err, step.entry) from None
    if mapping:
        for step in writes:
            rewrite(step.entry.req.body, mapping)

    # 4. POST, then PUT / PATCH, then 5. GET / HEAD: each through the router, in the unit of work.
    for step in (*posts, *puts):
        await run(step.entry)
    for entry in reads:
        await run(entry)
    return [responses[e.index] for e in entries]


def _map_full_url(mapping: dict[str, str], entry: Entry, type: str, id: str) -> None:
    """Links to this entry's fullUrl become ``type/id`` (urn:uuid, urn:oid, or a POST's own URL)."""
    full_url = entry.full_url
    if not full_url:
        return
    target = f"{type}/{id}"
    base = entry.req.base_url
    if is_urn(full_url):
        mapping[full_url] = target
    elif entry.method == "POST":
        mapping[full_url] = target
        if base and full_url.startswith(base + "/"):
            mapping[full_url[len(base) + 1:]] = target
    elif base and full_url.startswith(base + "/") and full_url[len(base) + 1:] != target:
        mapping[full_url] = target


async def _resolve_conditional(w: Repository, cond: tuple[str, str],
                               pending: dict[tuple[str, tuple[tuple[str, str], ...]], str]) -> str:
    type, criteria = cond
    check_type(w.svc, type)
    pairs = criteria_pairs(criteria)
    created = pending.get((type, tuple(sorted(pairs))))
    if created is not None:
        return f"{type}/{created}"
    found = await w.match(type, pairs)
    if len(found) > 1:
        raise precondition_failed(f"The conditional reference '{type}?{criteria}' matches more than one {type}")
    if not found:
        raise invalid(f"The conditional reference '{type}?{criteria}' matches no {type}")
    return f"{type}/{found[0].id}"
