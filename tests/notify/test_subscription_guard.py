"""The Subscription write guard: criteria, channel and endpoint refused with a precise OperationOutcome,
private endpoints only with FHIR_EXCHANGE_ALLOW_PRIVATE_ENDPOINTS, a cap per client, status owned by the
server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.notify.endpoints import public
from fhir_exchange.settings import Settings
from tests.consult.scenario import Network
from tests.notify.conftest import notify_settings, open_network
from tests.notify.helpers import created, subscription, topic_subscription

PUBLIC = "https://93.184.215.14/hook"  # a literal public address: no name resolution in the test


@pytest.fixture
async def strict(tmp_path: Path, definitions: Definitions) -> AsyncIterator[Network]:
    async for n in open_network(notify_settings(tmp_path, allow_private_endpoints=False,
                                                subscriptions_per_client=2), definitions):
        yield n


def refused(r: httpx.Response, status: int, words: str, where: str) -> None:
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert words in issue["diagnostics"], issue
    assert where in issue.get("expression", []) + issue.get("location", []), issue


PRIVATE = ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/hook", "http://192.168.0.10/",
           "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
           "http://100.64.0.1/", "ws://127.0.0.1/socket"]
MALFORMED = [("ftp://93.184.215.14/hook", "must be a http or https URL"),
             ("https://user:pw@93.184.215.14/hook", "credentials"), ("https:///hook", "names no host")]


async def test_private_and_malformed_endpoints_are_refused(strict: Network) -> None:
    for endpoint in PRIVATE:  # one network for all: each case is one request
        channel = "websocket" if endpoint.startswith("ws") else "rest-hook"
        r = await strict.hub.http.post("/Subscription", json=subscription("Task", endpoint, channel=channel))
        refused(r, 422, "FHIR_EXCHANGE_ALLOW_PRIVATE_ENDPOINTS", "Subscription.channel.endpoint")
    for endpoint, words in MALFORMED:
        r = await strict.hub.http.post("/Subscription", json=subscription("Task", endpoint))
        refused(r, 422, words, "Subscription.channel.endpoint")
    # The same rules on every path: a transaction entry is refused as a whole.
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": subscription("Task", PRIVATE[0]), "request": {"method": "POST", "url": "Subscription"}}]}
    r = await strict.hub.http.post("", json=bundle)
    assert r.status_code == 422, r.text
    assert (await strict.hub.http.get("/Subscription")).json().get("total", 0) == 0


async def test_public_endpoint_is_accepted_and_status_is_the_servers(strict: Network) -> None:
    sub = subscription("Task?status=requested", PUBLIC)
    sub["status"] = "active"
    sub["error"] = "planted"
    body = await created(strict.hub.http, sub)
    assert body["status"] == "requested" and "error" not in body


async def test_criteria_channel_and_filters_are_checked(strict: Network) -> None:
    for criteria, words in [("Unicorn?x=1", "not a search URL"), ("Task?unknown-param=1", "unknown-param"),
                            ("Task?patient.name=Kim", "chained parameters"),
                            ("Task?_has:Provenance:target:agent=x", "chained parameters and _has"),
                            ("http://example.org/SubscriptionTopic/other", "not a topic this server offers")]:
        r = await strict.hub.http.post("/Subscription", json=subscription(criteria, PUBLIC))
        refused(r, 422, words, "Subscription.criteria")
    r = await strict.hub.http.post("/Subscription", json=subscription("Task", PUBLIC, channel="email"))
    refused(r, 422, "not offered", "Subscription.channel.type")
    r = await strict.hub.http.post("/Subscription", json=subscription("Task", PUBLIC, payload="application/xml"))
    refused(r, 422, "application/fhir+json", "Subscription.channel.payload")
    r = await strict.hub.http.post("/Subscription", json=topic_subscription("consult-request", PUBLIC,
                                                                            filters=["Patient?gender=male"]))
    refused(r, 422, "is about Task", "Subscription.criteria")


async def test_a_client_holds_at_most_the_cap(strict: Network) -> None:
    first = await created(strict.hub.http, subscription("Task", PUBLIC))
    await created(strict.hub.http, subscription("Communication", PUBLIC))
    r = await strict.hub.http.post("/Subscription", json=subscription("Patient", PUBLIC))
    refused(r, 403, "SUBSCRIPTIONS_PER_CLIENT=2", "Subscription")
    # Another client is not counted against this one.
    await created(strict.partner.http, subscription("Task", PUBLIC))
    # One set off frees a place; an update of a held Subscription is no new one.
    first["status"] = "off"
    r = await strict.hub.http.put(f"/Subscription/{first['id']}", json=first)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "off"
    await created(strict.hub.http, subscription("Patient", PUBLIC))


def test_address_classes() -> None:
    assert public("93.184.215.14") and public("2606:2800:220:1:248:1893:25c8:1946")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.1.1",
                    "::1", "fc00::1", "fe80::1", "224.0.0.1", "0.0.0.0", "::ffff:10.0.0.1", "240.0.0.1"):
        assert not public(address), address


async def test_allowed_private_endpoints_with_the_setting(tmp_path: Path, definitions: Definitions) -> None:
    settings: Settings = notify_settings(tmp_path, allow_private_endpoints=True)
    async for net in open_network(settings, definitions):
        await created(net.hub.http, subscription("Task", "http://127.0.0.1:9/hook"))
