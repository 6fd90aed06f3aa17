"""The consult topics, as SubscriptionTopic canonicals of the Subscriptions R5 Backport IG
(http://hl7.org/fhir/uv/subscriptions-backport/, "backport-topic-canonical"): R4 has no SubscriptionTopic
resource, so a topic is a canonical URL this server defines and documents (docs/notifications.md),
under the consult IG's base.

Each topic names the resource types and interactions that trigger it and a search that the changed
resource must match; ``{me}`` in that search is the subscribing institution. What an institution may not
see never reaches it whatever the topic: the notifier reads each focus as the subscription's owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_exchange.consult.model import CONSULT_NOTE, LOINC
from fhir_exchange.consult.profiles import BASE, CATEGORY_SYSTEM, TASK_CODE_SYSTEM

TOPIC_BASE = f"{BASE}/SubscriptionTopic/"


@dataclass(frozen=True, slots=True)
class Topic:
    url: str
    title: str
    type: str  # the resource type it is about
    interactions: frozenset[str]  # create | update
    criteria: str  # a search on ``type``; ``{me}`` is the subscriber's Organization reference
    status_change: bool = False  # an update triggers only when ``status`` changed

    def search(self, institution: str | None) -> str:
        """The topic's search for a subscriber (without an institution, e.g. no authentication, the
        ``{me}`` parameter is dropped)."""
        if institution:
            return self.criteria.replace("{me}", f"Organization/{institution}")
        type_, _, query = self.criteria.partition("?")
        kept = [p for p in query.split("&") if "{me}" not in p]
        return type_ + ("?" + "&".join(kept) if kept else "")

    def triggered(self, method: str, resource: dict[str, Any], previous: dict[str, Any] | None) -> bool:
        interaction = "create" if previous is None or method == "POST" else "update"
        if interaction not in self.interactions:
            return False
        if interaction == "update" and self.status_change:
            return previous is None or previous.get("status") != resource.get("status")
        return True


TOPICS: dict[str, Topic] = {t.url: t for t in (
    Topic(f"{TOPIC_BASE}consult-request", "A new consult asked of my institution", "Task",
          frozenset({"create"}), f"Task?code={TASK_CODE_SYSTEM}|consult&owner={{me}}"),
    Topic(f"{TOPIC_BASE}consult-status", "A consult's Task changed status", "Task",
          frozenset({"update"}), f"Task?code={TASK_CODE_SYSTEM}|consult,{TASK_CODE_SYSTEM}|follow-up",
          status_change=True),
    Topic(f"{TOPIC_BASE}consult-communication", "A question or an answer in a consult", "Communication",
          frozenset({"create"}),
          f"Communication?category={CATEGORY_SYSTEM}|consult-question,{CATEGORY_SYSTEM}|consult-answer"),
    Topic(f"{TOPIC_BASE}consult-note", "A consult note written or amended", "DocumentReference",
          frozenset({"create", "update"}), f"DocumentReference?type={LOINC}|{CONSULT_NOTE}"),
)}
