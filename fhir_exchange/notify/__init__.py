"""Notifications and message routing (docs/notifications.md): R4 Subscriptions (rest-hook, websocket)
and the consult topics of the Subscriptions R5 Backport IG on the store's change feed, ``$status``, and
the forwarding of messages to exchange-system institutions.

The composition root (api/app.py) wires it: :func:`guard` on the write path, :func:`install` on the
router (operations), and a :class:`~fhir_exchange.notify.notifier.Notifier` run in the server's lifespan.
"""

from __future__ import annotations

from fhir_exchange.definitions import Definitions
from fhir_exchange.interactions.hooks import Guard
from fhir_exchange.interactions.router import Router
from fhir_exchange.notify import status
from fhir_exchange.notify.guard import subscription_guard
from fhir_exchange.settings import Settings


def guard(settings: Settings, definitions: Definitions) -> Guard:
    return subscription_guard(settings, definitions)


def base_url(settings: Settings) -> str:
    """The FHIR base the notifier names resources by (no request tells it)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return f"http://{settings.host}:{settings.port}{settings.base_path.rstrip('/')}"


def install(router: Router) -> None:
    """Register ``$status`` on the router (``$message-delivery`` comes with the Forwarder, which the
    serving process makes)."""
    status.install(router.operations)
