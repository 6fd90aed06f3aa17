"""messages: https://hl7.org/fhir/R4/messaging.html and
https://hl7.org/fhir/R4/messageheader-operation-process-message.html

``POST [base]/$process-message`` takes a ``message`` Bundle (or a Parameters with it as ``content``):
``entry[0]`` is a MessageHeader (bdl-12) whose ``focus`` resolves inside the Bundle (cx-msg-1),
and its event (``eventCoding``, or ``eventUri``) selects a handler from :class:`MessageHandlers`. The
consult events (consult-request, consult-status-update, consult-communication, consult-report,
consult-cancel; system :data:`CONSULT_EVENT_SYSTEM`) check the focus (the consult profiles plug in
through the validator; consult-cancel must name a ServiceRequest or Task this server holds) and apply
the other entries in ONE unit of work with the transaction engine, each entry dispatched through the
router as the caller's actor: an entry with ``request`` is processed as written, a resource with an
id is an update-as-create of that id (exchange systems keep their ids), one without is a create
whose ``urn:uuid`` fullUrl is replaced in every reference.

The answer is a response message (``MessageHeader.response.identifier`` = the request header's id,
``code`` ok / transient-error / fatal-error, ``details`` an OperationOutcome) with HTTP 200, as the
operation's definition returns the response Bundle. A request that is not a message at all (not a
Bundle of type message, no MessageHeader first, a header without id) cannot be answered by a message
and gets a 400 OperationOutcome.

Reliable messaging (messaging.html#reliable): the response is stored as a message record of the
store, outside the FHIR namespace (no client can read, write or plant one through the API), keyed by
the source endpoint and the message identity (``Bundle.identifier``, else the MessageHeader id), with
a digest of the message's content, written with the "must not exist" precondition inside the unit of
work that applied the message, under a lock on that key. A repeated message returns the stored
response byte for byte and changes nothing; the same identity with different content is a 409 (the
sender reused an id), never the cached reply. The digest covers the Bundle without ``meta`` and
``timestamp``, which a sender may refresh when it retries. ok and fatal-error answers are final and
stored; transient-error answers are not, so a retry can succeed.

Routing: once a message is applied, the routes registered on :class:`MessageHandlers` run in its unit of
work; the notifier's forwarder (notify/forward.py) queues a message whose ``MessageHeader.destination``
names an exchange-system institution for that system's ``$process-message``, and says so in the answer.

``async=true`` is declined with a 400 OperationOutcome (only synchronous processing is offered, which
the operation allows).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.bundles.entries import Entry, entry_request
from fhir_exchange.bundles.transaction import run_entries
from fhir_exchange.clock import instant
from fhir_exchange.consult.profiles import EVENT_SYSTEM
from fhir_exchange.errors import Category, FhirError, Issue, invalid, operation_outcome
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.operations import Operation
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.store.port import MessageRecord, VersionConflict

log = logging.getLogger(__name__)

# The CodeSystem of the consult IG (profiles/CodeSystem-consult-event.json).
CONSULT_EVENT_SYSTEM = EVENT_SYSTEM

PROCESS_MESSAGE = "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"


@dataclass(frozen=True, slots=True)
class Message:
    bundle: dict[str, Any]
    header: dict[str, Any]
    header_id: str
    source: str  # MessageHeader.source.endpoint ("" when missing)
    event: str  # "system|code" of eventCoding, or the eventUri
    request: FhirRequest  # the $process-message request: its actor and base URL go to every entry

    def resources(self) -> Iterable[dict[str, Any]]:
        for e in self.bundle.get("entry", [])[1:]:
            if isinstance(e, dict) and isinstance(e.get("resource"), dict):
                yield e["resource"]


MessageHandler = Callable[[Router, Repository, Message], Awaitable[list[Issue]]]
"""Applies a message inside the unit of work of the repository; returns informational issues, raises
on failure."""

MessageRoute = Callable[[Repository, Message], Awaitable[list[Issue]]]
"""Runs once a message was applied, in its unit of work, to send it on (notify/forward.py queues it for a
destination institution's exchange system after the commit); returns informational issues for the answer."""


@dataclass(slots=True)
class MessageHandlers:
    handlers: dict[str, MessageHandler] = field(default_factory=dict)
    routes: list[MessageRoute] = field(default_factory=list)

    def register(self, event: str, handler: MessageHandler) -> None:
        """``event``: ``system|code`` of an eventCoding, or an eventUri."""
        self.handlers[event] = handler

    def get(self, event: str) -> MessageHandler | None:
        return self.handlers.get(event)


class _Rejected(Exception):
    """The message is malformed or unknown: answer fatal-error with these issues."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues[0].diagnostics)
        self.issues = issues


# -- consult events ---------------------------------------------------------------------------------

FocusCheck = Callable[[Repository, dict[str, Any]], Awaitable[str | None]]


def consult_handler(focus_types: frozenset[str], check: FocusCheck | None = None) -> MessageHandler:
    """A consult event: the focus must include one of ``focus_types`` (and pass ``check``); then the
    message's resources are applied as one transaction."""

    async def handle(router: Router, w: Repository, message: Message) -> list[Issue]:
        focus = [r for r in _focus_resources(message) if r.get("resourceType") in focus_types]
        if not focus:
            raise _Rejected([Issue("error", "business-rule",
                                   f"Event {message.event} needs a focus of type {' or '.join(sorted(focus_types))}",
                                   ("Bundle.entry[0].resource.focus",), "msg-focus-type")])
        if check is not None:
            for r in focus:
                problem = await check(w, r)
                if problem:
                    raise _Rejected([Issue("error", "business-rule", problem, ("Bundle.entry[0].resource.focus",),
                                           "msg-focus-state")])
        return await apply_entries(router, w, message)

    return handle


async def _cancel_check(w: Repository, resource: dict[str, Any]) -> str | None:
    rt, status, rid = resource.get("resourceType"), resource.get("status"), resource.get("id")
    if rt == "ServiceRequest" and status not in ("revoked", "entered-in-error"):
        return f"consult-cancel needs the ServiceRequest revoked, not '{status}'"
    if rt == "Task" and status not in ("cancelled", "rejected", "entered-in-error"):
        return f"consult-cancel needs the Task cancelled, not '{status}'"
    # A cancellation cancels something this server holds: it never creates the request it cancels.
    held = await w.read(str(rt), rid) if isinstance(rid, str) and rid else None
    if held is None or held.deleted:
        name = f"{rt}/{rid}" if isinstance(rid, str) and rid else f"a {rt} without an id"
        return f"consult-cancel names {name}, which this server does not hold"
    return None


CONSULT_EVENTS: dict[str, MessageHandler] = {
    "consult-request": consult_handler(frozenset({"ServiceRequest"})),
    "consult-status-update": consult_handler(frozenset({"Task", "ServiceRequest"})),
    "consult-communication": consult_handler(frozenset({"Communication"})),
    "consult-report": consult_handler(frozenset({"Task", "DocumentReference", "DiagnosticReport"})),
    "consult-cancel": consult_handler(frozenset({"ServiceRequest", "Task"}), _cancel_check),
}


async def apply_entries(router: Router, w: Repository, message: Message) -> list[Issue]:
    """Apply the message's resources (every entry after the header) as one transaction inside the unit of
    work of ``w``, each entry a request derived from the $process-message request (same actor, base)."""
    entries: list[Entry] = []
    for index, raw in enumerate(message.bundle.get("entry", [])):
        if index == 0:
            continue
        if isinstance(raw, dict) and "request" not in raw and isinstance(raw.get("resource"), dict):
            res = raw["resource"]
            rt, rid = res.get("resourceType"), res.get("id")
            request = {"method": "PUT", "url": f"{rt}/{rid}"} if rid else {"method": "POST", "url": str(rt)}
            raw = {**raw, "request": request}
        entries.append(entry_request(raw, index, message.request))
    responses = await run_entries(router, w, entries)
    return [Issue("information", "informational", f"{r.status} {(r.location or '').split('/_history/')[0]}".strip(),
                  (f"Bundle.entry[{e.index}]",))
            for e, r in zip(entries, responses, strict=True)]


# -- the operation --------------------------------------------------------------------------------

def install(router: Router, handlers: MessageHandlers | None = None) -> MessageHandlers:
    registry = handlers or MessageHandlers()
    for code, handler in CONSULT_EVENTS.items():
        registry.handlers.setdefault(f"{CONSULT_EVENT_SYSTEM}|{code}", handler)

    async def run(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
        return await process_message(router, registry, repo, req)

    router.operations.register(Operation("process-message", run, PROCESS_MESSAGE, system=True, affects_state=True))
    router.installed[_KEY] = registry
    return registry


_KEY = "message-handlers"


def message_handlers(router: Router) -> MessageHandlers:
    """The handlers (and routes) :func:`install` registered on ``router``, for the composition root."""
    handlers: MessageHandlers = router.installed[_KEY]
    return handlers


async def process_message(router: Router, handlers: MessageHandlers, repo: Repository,
                          req: FhirRequest) -> FhirResponse:
    if (req.query_value("async") or "").lower() == "true":
        raise invalid("Asynchronous message processing (async=true) is not supported: send the message "
                      "without async, it is processed synchronously", "async", code="not-supported")
    message = parse_message(req.body, req)
    key, digest = message_key(message), content_digest(message)
    try:
        async with repo.unit() as w:
            prior = await _prior(w, key, digest)
            if prior is not None:
                return prior
            try:
                handler = _check(w, handlers, message)
                info = await handler(router, w, message)
                await w.run_checks()
                for route in handlers.routes:
                    info = [*info, *await route(w, message)]
            except _Rejected:
                raise
            except FhirError as err:
                if err.category is Category.TRANSIENT:
                    raise
                raise _Rejected(err.issues) from None
            return await _store(w, key, digest, _response(w, message, key, "ok", info))
    except _Rejected as rejected:  # the message changed nothing; store and send the fatal-error answer
        issues = rejected.issues
    except FhirError as err:
        if err.category is not Category.TRANSIENT:
            raise
        body = _response(repo, message, key, "transient-error", err.issues)
        body.pop("id")  # not stored: a retry may succeed
        return FhirResponse(200, resource=body)
    async with repo.unit() as w:
        prior = await _prior(w, key, digest)
        if prior is not None:
            return prior
        return await _store(w, key, digest, _response(w, message, key, "fatal-error", issues))


def parse_message(body: Any, request: FhirRequest) -> Message:
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        content = [p.get("resource") for p in body.get("parameter") or []
                   if isinstance(p, dict) and p.get("name") == "content"]
        body = content[0] if len(content) == 1 else None
        if body is None:
            raise invalid("$process-message needs exactly one 'content' parameter holding the message Bundle",
                          "Parameters.parameter")
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise invalid("$process-message takes a message Bundle", "Bundle", code="structure")
    if body.get("type") != "message":
        raise invalid(f"$process-message takes a Bundle of type message, not '{body.get('type')}'", "Bundle.type")
    entries = body.get("entry")
    first = entries[0] if isinstance(entries, list) and entries else None
    header = first.get("resource") if isinstance(first, dict) else None
    if not isinstance(header, dict) or header.get("resourceType") != "MessageHeader":
        raise invalid("A message Bundle must have a MessageHeader as its first resource (bdl-12)",
                      "Bundle.entry[0].resource")
    header_id = header.get("id")
    if not isinstance(header_id, str) or not header_id:
        raise invalid("The MessageHeader has no id: a response could not name the message it answers",
                      "Bundle.entry[0].resource.id")
    source = header.get("source")
    endpoint = source.get("endpoint") if isinstance(source, dict) else None
    coding = header.get("eventCoding")
    if isinstance(coding, dict):
        event = f"{coding.get('system') or ''}|{coding.get('code') or ''}"
    else:
        event = str(header.get("eventUri") or "")
    return Message(body, header, header_id, endpoint if isinstance(endpoint, str) else "", event, request)


def message_key(message: Message) -> str:
    """The key of the stored response (also its Bundle id): the same for a repeated message from the
    same source and sender. The sending institution is part of it, so that no institution can read or
    collide with another's answers by sending a message with the same identity."""
    ident = message.bundle.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        key = f"identifier:{ident.get('system') or ''}|{ident['value']}"
    else:
        key = f"header:{message.header_id}"
    sender = message.request.actor.institution or ""
    return "msg-" + hashlib.sha256(f"{sender}\n{message.source}\n{key}".encode()).hexdigest()[:56]


def content_digest(message: Message) -> str:
    """What a repeated message must repeat: the Bundle without ``meta`` and ``timestamp``."""
    content = {k: v for k, v in message.bundle.items() if k not in ("meta", "timestamp")}
    return hashlib.sha256(jsonio.canonical(content)).hexdigest()


def _profile_issues(w: Repository, message: Message) -> list[Issue]:
    """The message Bundle against the profiles its event requires (the consult message profiles)."""
    profiles = w.profiles(message.bundle)
    if not profiles:
        return []
    return w.svc.validator.validate(message.bundle, profiles=profiles, resource_type="Bundle")


def _check(w: Repository, handlers: MessageHandlers, message: Message) -> MessageHandler:
    issues: list[Issue] = []
    if not message.source:
        issues.append(Issue("error", "required", "MessageHeader.source.endpoint is required",
                            ("Bundle.entry[0].resource.source.endpoint",)))
    if not message.event.strip("|"):
        issues.append(Issue("error", "required", "The MessageHeader has no event (eventCoding or eventUri)",
                            ("Bundle.entry[0].resource.event",)))
    issues.extend(_unresolved_focus(message))
    issues.extend(i for i in _profile_issues(w, message) if i.severity in ("error", "fatal"))
    handler = handlers.get(message.event)
    if handler is None and message.event.strip("|"):
        issues.append(Issue("error", "not-supported", f"Unknown message event '{message.event}'",
                            ("Bundle.entry[0].resource.event",), "msg-unknown-event"))
    if issues:
        raise _Rejected(issues)
    assert handler is not None
    return handler


def _entry_keys(message: Message) -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = {}
    for e in message.bundle.get("entry", []):
        if not isinstance(e, dict) or not isinstance(e.get("resource"), dict):
            continue
        r = e["resource"]
        if isinstance(e.get("fullUrl"), str):
            keys[e["fullUrl"]] = r
        if r.get("id"):
            keys[f"{r.get('resourceType')}/{r['id']}"] = r
    return keys


def _focus_refs(message: Message) -> list[Any]:
    """``focus[i].reference`` as sent ("" when a focus has none): client input, so not always a string
    (a number or list would break the string matching below, a list is not even hashable)."""
    focus = message.header.get("focus") or []
    return [f.get("reference", "") for f in focus if isinstance(f, dict)] if isinstance(focus, list) else []


def _unresolved_focus(message: Message) -> list[Issue]:
    keys = _entry_keys(message)
    out = []
    for i, ref in enumerate(_focus_refs(message)):
        if not isinstance(ref, str):
            out.append(Issue("error", "structure", "MessageHeader.focus.reference must be a string",
                             (f"Bundle.entry[0].resource.focus[{i}].reference",), "msg-focus-resolves"))
        elif ref not in keys and not any(ref.endswith("/" + k) for k in keys if "/" in k and "://" not in k):
            out.append(Issue("error", "invalid", f"MessageHeader.focus '{ref}' does not resolve inside the Bundle",
                             (f"Bundle.entry[0].resource.focus[{i}]",), "msg-focus-resolves"))
    return out


def _focus_resources(message: Message) -> list[dict[str, Any]]:
    keys = _entry_keys(message)
    return [keys[r] for r in _focus_refs(message) if isinstance(r, str) and r in keys]


async def _prior(w: Repository, key: str, digest: str) -> FhirResponse | None:
    await w.uow.lock_key(f"message:{key}")
    record = await w.uow.read_message(key)
    if record is None:
        return None
    if record.digest != digest:
        raise FhirError(Category.CONFLICT, "This message's identity (source endpoint and Bundle.identifier or "
                        "MessageHeader.id) was already used for a message with different content: a new message "
                        "needs a new id", code="duplicate")
    return FhirResponse(200, body=record.body)


async def _store(w: Repository, key: str, digest: str, response: dict[str, Any]) -> FhirResponse:
    body = jsonio.dumps(response)
    try:
        await w.uow.write_message(MessageRecord(key, digest, body))
    except VersionConflict:  # another node answered the same message first
        prior = await _prior(w, key, digest)
        if prior is None:
            raise
        return prior
    return FhirResponse(200, body=body)


def _response(repo: Repository, message: Message, key: str, code: str, issues: list[Issue]) -> dict[str, Any]:
    clock = repo.svc.clock
    header_id, outcome_id = clock.new_id(), clock.new_id()
    header: dict[str, Any] = {"resourceType": "MessageHeader", "id": header_id}
    # The event is echoed from the request, which may be anything: only a well-formed Coding's string
    # members or a string eventUri go into the stored response (not junk, nor a 900-level nest).
    coding = message.header.get("eventCoding")
    if isinstance(coding, dict):
        echoed = {k: coding[k] for k in ("system", "code", "display") if isinstance(coding.get(k), str)}
        if echoed:
            header["eventCoding"] = echoed
    elif isinstance(message.header.get("eventUri"), str):
        header["eventUri"] = message.header["eventUri"]
    if message.source:
        header["destination"] = [{"endpoint": message.source}]
    header["source"] = {"name": "fhir-exchange", "endpoint": f"{message.request.base_url or 'urn:fhir-exchange'}"}
    header["response"] = {"identifier": message.header_id, "code": code,
                          "details": {"reference": f"urn:uuid:{outcome_id}"}}
    if not issues:
        issues = [Issue("information", "informational", "Message processed")]
    return {
        "resourceType": "Bundle", "id": key, "type": "message", "timestamp": instant(clock.now()),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{clock.new_id()}"},
        "entry": [
            {"fullUrl": f"urn:uuid:{header_id}", "resource": header},
            {"fullUrl": f"urn:uuid:{outcome_id}", "resource": {"id": outcome_id, **operation_outcome(issues)}},
        ],
    }
