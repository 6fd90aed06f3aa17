"""Message routing for exchange-system connections (https://hl7.org/fhir/R4/messaging.html): a message
that this server applied (``$process-message`` answered ``ok``) and whose ``MessageHeader.destination``
names, as ``receiver``, an institution whose Endpoint is of the exchange-system style (the consult IG's
connection-style extension, status active) is sent on to that Endpoint's ``$process-message``
(``POST [Endpoint.address]/$process-message``, the Bundle as received).

Queueing happens after the message's unit of work commits, as a store record (so it survives a restart
and any process may deliver it); the notifier's lease holder sends it, with retries and doubling
back-off, up to ``forward_max_attempts``. The answer is correlated: a response message whose
``MessageHeader.response.identifier`` is the forwarded header's id ends the delivery (``delivered``,
with the response's code); anything else is a failed attempt. Every attempt is audited.

The requester sees the delivery state with this server's operation
``GET [base]/$message-delivery?message=[MessageHeader.id]`` (canonical
http://fhir-exchange.org/fhir/OperationDefinition/message-delivery): a Parameters with one
``delivery`` per destination (``destination``, ``endpoint``, ``status`` pending | delivered | failed,
``attempts``, ``lastAttempt``, ``error``, and the correlated ``response`` Bundle). Only the institution
that sent the message may ask; for others the message is unknown (404).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import orjson

from fhir_exchange.clock import instant
from fhir_exchange.errors import Issue, invalid, not_found
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.services import Services
from fhir_exchange.notify import audit
from fhir_exchange.notify.endpoints import EndpointRefused, check_endpoint
from fhir_exchange.security.audit import AuditSink
from fhir_exchange.store.port import Record

KIND = "notify-forward"
STYLE = "http://fhir-exchange.org/fhir/StructureDefinition/consult-connection-style"
EXCHANGE_SYSTEM = "exchange-system"
DEFINITION = "http://fhir-exchange.org/fhir/OperationDefinition/message-delivery"

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Forward:
    sender: str  # the sending institution ("" : the system)
    header: str  # MessageHeader.id of the forwarded message
    destination: str  # Organization id
    endpoint: str  # where it is posted
    bundle: dict[str, Any]
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    retry_at: str = ""
    last_attempt: str = ""
    error: str = ""
    response: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.sender or '-'}:{self.header}:{self.destination}"

    def to_bytes(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Forward:
        return cls(**orjson.loads(raw))


def _receiver_org(destination: Any) -> str | None:
    receiver = destination.get("receiver") if isinstance(destination, dict) else None
    ref = receiver.get("reference") if isinstance(receiver, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Organization" else None


class Forwarder:
    def __init__(self, svc: Services, audit_sink: AuditSink | None) -> None:
        self.svc = svc
        self.audit = audit_sink
        self.settings = svc.settings

    # -- queueing, in the message's unit of work -----------------------------------------------------

    async def route(self, w: Repository, message: Any) -> list[Issue]:
        """A :data:`fhir_exchange.bundles.message.MessageRoute`."""
        issues: list[Issue] = []
        for destination in message.header.get("destination") or []:
            org = _receiver_org(destination)
            endpoint = await self._exchange_endpoint(w, org) if org else None
            if org is None or endpoint is None:
                continue
            forward = Forward(sender=w.actor.institution or "", header=message.header_id, destination=org,
                              endpoint=f"{endpoint.rstrip('/')}/$process-message", bundle=message.bundle)
            w.after_commit(partial(self.enqueue, forward))
            issues.append(Issue("information", "informational",
                                f"Forwarded to Organization/{org}'s exchange system ({forward.endpoint}): delivery "
                                f"state at $message-delivery?message={message.header_id}",
                                ("MessageHeader.destination",)))
        return issues

    async def _exchange_endpoint(self, w: Repository, org: str) -> str | None:
        organization = await w.uow.read("Organization", org)
        if organization is None or organization.deleted:
            return None
        for ref in (jsonio.loads(organization.body).get("endpoint") or []):
            target = str((ref or {}).get("reference") or "").rpartition("Endpoint/")[2]
            endpoint = await w.uow.read("Endpoint", target) if target else None
            if endpoint is None or endpoint.deleted or endpoint.owner != org:
                continue  # only the institution's own Endpoint says where it is reached
            doc = jsonio.loads(endpoint.body)
            styles = [e.get("valueCode") for e in doc.get("extension") or [] if e.get("url") == STYLE]
            if EXCHANGE_SYSTEM in styles and doc.get("status") == "active" and doc.get("address"):
                return str(doc["address"])
        return None

    async def enqueue(self, forward: Forward) -> None:
        now = self.svc.clock.now()
        expires = instant(now + timedelta(days=self.settings.forward_retention_days))
        await self.svc.store.put_record(Record(KIND, forward.key, forward.to_bytes(), expires), if_absent=True,
                                        now=instant(now))

    # -- delivery, by the notifier's lease holder -------------------------------------------------------

    async def round(self, http: httpx.AsyncClient) -> None:
        now = instant(self.svc.clock.now())
        for record in await self.svc.store.list_records(KIND, now=now):
            forward = Forward.from_bytes(record.value)
            if forward.status != "pending" or (forward.retry_at and now < forward.retry_at):
                continue
            await self.attempt(http, forward, record)

    async def attempt(self, http: httpx.AsyncClient, forward: Forward, record: Record) -> None:
        now_dt = self.svc.clock.now()
        status, error = 0, ""
        try:
            await check_endpoint(forward.endpoint, allow_private=self.settings.allow_private_endpoints)
            r = await http.post(forward.endpoint, content=jsonio.dumps(forward.bundle),
                                headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
                                timeout=self.settings.notify_timeout, follow_redirects=False)
            status = r.status_code
            response = self._correlated(r, forward.header)
            if response is None:
                error = f"POST {forward.endpoint} answered {r.status_code} without a response message to " \
                        f"MessageHeader/{forward.header}"
        except EndpointRefused as exc:
            error, response = str(exc), None
        except httpx.HTTPError as exc:
            error, response = f"POST {forward.endpoint} failed: {type(exc).__name__} {exc}".strip(), None
        forward.attempts += 1
        forward.last_attempt = instant(now_dt)
        if response is not None:
            forward.status, forward.error, forward.response = "delivered", "", response
        else:
            forward.error = error
            if forward.attempts >= self.settings.forward_max_attempts:
                forward.status = "failed"
            delay = min(self.settings.notify_retry_max, self.settings.notify_retry_min * 2 ** (forward.attempts - 1))
            forward.retry_at = instant(now_dt + timedelta(seconds=delay))
        await self.svc.store.put_record(Record(KIND, forward.key, forward.to_bytes(), record.expires))
        event = audit.delivery_event(what=f"MessageHeader/{forward.header}", subscriber=forward.destination,
                                     channel="message", url=forward.endpoint, status=status,
                                     ok=response is not None, error=error, recorded=instant(now_dt), entity=None,
                                     subject=None)
        await audit.record(self.audit, event, forward.sender or None, {forward.destination})

    @staticmethod
    def _correlated(r: httpx.Response, header_id: str) -> dict[str, Any] | None:
        if not 200 <= r.status_code < 300:
            return None
        try:
            body = jsonio.loads(r.content)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle" or body.get("type") != "message":
            return None
        first = (body.get("entry") or [{}])[0]
        header = first.get("resource") if isinstance(first, dict) else None
        response = header.get("response") if isinstance(header, dict) else None
        if not isinstance(response, dict) or response.get("identifier") != header_id:
            return None
        return body

    # -- the requester's view ---------------------------------------------------------------------------

    async def delivery(self, repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
        header = req.query_value("message")
        if not header:
            raise invalid("$message-delivery needs 'message': the id of the MessageHeader that was sent", "message")
        now = instant(self.svc.clock.now())
        sender = repo.actor.institution or ""
        found = [Forward.from_bytes(r.value) for r in await self.svc.store.list_records(KIND, now=now)]
        mine = [f for f in found if f.header == header and (repo.actor.system or f.sender == sender)]
        if not mine:
            raise not_found(f"No forwarded message with MessageHeader id {header} is known to the caller")
        params: list[dict[str, Any]] = []
        for f in mine:
            parts: list[dict[str, Any]] = [
                {"name": "destination", "valueReference": {"reference": f"Organization/{f.destination}"}},
                {"name": "endpoint", "valueUrl": f.endpoint},
                {"name": "status", "valueCode": f.status},
                {"name": "attempts", "valueInteger": f.attempts}]
            if f.last_attempt:
                parts.append({"name": "lastAttempt", "valueInstant": f.last_attempt})
            if f.retry_at and f.status == "pending":
                parts.append({"name": "nextAttempt", "valueInstant": f.retry_at})
            if f.error:
                parts.append({"name": "error", "valueString": f.error})
            if f.response is not None:
                parts.append({"name": "response", "resource": f.response})
            params.append({"name": "delivery", "part": parts})
        return FhirResponse(200, resource={"resourceType": "Parameters", "parameter": params})

    def install(self, operations: OperationRegistry) -> None:
        operations.register(Operation("message-delivery", self.delivery, DEFINITION, system=True,
                                      methods=("GET",)))

