"""A Subscription as the notifier reads it: https://hl7.org/fhir/R4/subscription.html, and the topic-based
form of the Subscriptions R5 Backport IG (http://hl7.org/fhir/uv/subscriptions-backport/): ``criteria``
holds a topic canonical, ``_criteria`` its ``backport-filter-criteria`` extensions, ``channel._payload``
the ``backport-payload-content`` code and ``channel`` the ``backport-heartbeat-period`` and
``backport-timeout`` extensions.

Parsing never touches the store; what cannot be used raises :class:`SubscriptionError` with the element
it is about, so the write guard answers a precise 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
BACKPORT_PROFILE = f"{BACKPORT}backport-subscription"
FILTER_CRITERIA = f"{BACKPORT}backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}backport-payload-content"
HEARTBEAT_PERIOD = f"{BACKPORT}backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}backport-timeout"
STATUS_PROFILE = f"{BACKPORT}backport-subscription-status-r4"

CHANNEL_TYPES = frozenset({"rest-hook", "websocket"})
PAYLOAD_CONTENTS = frozenset({"empty", "id-only", "full-resource"})
FHIR_JSON = frozenset({"application/fhir+json", "application/json"})


class SubscriptionError(ValueError):
    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True, slots=True)
class Spec:
    """What a Subscription asks for."""

    id: str
    status: str
    criteria: str  # a search URL, or a topic canonical when ``topic`` is True
    topic: bool
    filters: tuple[str, ...]  # backport-filter-criteria (topic-based only)
    channel: str  # rest-hook | websocket
    endpoint: str
    payload: str  # the MIME type, "" when absent
    content: str  # empty | id-only | full-resource (topic-based); plain R4: full-resource when payload set
    headers: tuple[tuple[str, str], ...]
    heartbeat: int  # seconds, 0: none
    timeout: float  # seconds, 0: the server's default
    end: str  # Subscription.end, "" when none

    @property
    def sends_resource(self) -> bool:
        return bool(self.payload) and self.content == "full-resource"


def _extensions(element: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip() or any(c in raw for c in "\r\n"):
        raise SubscriptionError(f"channel.header {raw!r} is not 'Name: value' on one line",
                                "Subscription.channel.header")
    if name.strip().lower() in ("host", "content-length", "content-type", "transfer-encoding"):
        raise SubscriptionError(f"channel.header may not set {name.strip()}", "Subscription.channel.header")
    return name.strip(), value.strip()


def parse_spec(resource: dict[str, Any], *, is_topic: bool) -> Spec:
    """``is_topic``: whether ``criteria`` names a topic this server offers (the caller knows them)."""
    channel = resource.get("channel") if isinstance(resource.get("channel"), dict) else {}
    assert isinstance(channel, dict)
    type_ = channel.get("type")
    if type_ not in CHANNEL_TYPES:
        raise SubscriptionError(f"channel.type '{type_}' is not offered: this server sends rest-hook and websocket "
                                "notifications", "Subscription.channel.type")
    endpoint = channel.get("endpoint") or ""
    if type_ == "rest-hook" and not endpoint:
        raise SubscriptionError("A rest-hook channel needs channel.endpoint", "Subscription.channel.endpoint")
    payload = str(channel.get("payload") or "")
    if payload and payload.split(";")[0].strip() not in FHIR_JSON:
        raise SubscriptionError(f"channel.payload '{payload}' is not offered: application/fhir+json or none",
                                "Subscription.channel.payload")
    content_ext = _extensions(channel.get("_payload"), PAYLOAD_CONTENT)
    content = str(content_ext[0].get("valueCode")) if content_ext else ("id-only" if is_topic else "full-resource")
    if content not in PAYLOAD_CONTENTS:
        raise SubscriptionError(f"backport-payload-content '{content}' is not empty, id-only or full-resource",
                                "Subscription.channel.payload")
    filters = tuple(str(e.get("valueString") or "") for e in _extensions(resource.get("_criteria"), FILTER_CRITERIA))
    if filters and not is_topic:
        raise SubscriptionError("backport-filter-criteria belongs to a topic-based Subscription (criteria naming a "
                                "SubscriptionTopic)", "Subscription.criteria")
    heartbeat = _extensions(channel, HEARTBEAT_PERIOD)
    timeout = _extensions(channel, TIMEOUT)
    return Spec(
        id=str(resource.get("id") or ""), status=str(resource.get("status") or ""),
        criteria=str(resource.get("criteria") or "").strip(), topic=is_topic, filters=filters, channel=type_,
        endpoint=str(endpoint), payload=payload, content=content,
        headers=tuple(_header(str(h)) for h in channel.get("header") or []),
        heartbeat=int(heartbeat[0].get("valueUnsignedInt") or 0) if heartbeat else 0,
        timeout=float(timeout[0].get("valueUnsignedInt") or 0) if timeout else 0.0,
        end=str(resource.get("end") or ""))
