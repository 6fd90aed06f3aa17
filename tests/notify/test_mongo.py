"""The same delivery on the MongoDB store (SecantusDB, or MONGODB_URL): cursors, lease and change feed go
through the store port, so a consult reaches the consultant, and a receiver that was down gets what it
missed in commit order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhir_exchange.definitions import Definitions
from tests.consult.scenario import Consult, Network, opened
from tests.mongo_server import fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.notify.conftest import notify_settings, open_network
from tests.notify.helpers import created, status_of, subscription
from tests.notify.receiver import Receiver


@pytest.fixture
async def mongo_net(tmp_path: Path, definitions: Definitions, fresh_db_url: str  # noqa: F811
                    ) -> AsyncIterator[Network]:
    async for n in open_network(notify_settings(tmp_path, store_url=fresh_db_url), definitions):
        yield n


async def test_delivery_on_mongodb(mongo_net: Network, receiver: Receiver) -> None:
    net = mongo_net
    sub = await created(net.hub.http, subscription(f"Task?owner={net.hub.org_ref}", receiver.url,
                                                   payload="application/fhir+json"))
    await status_of(net.hub.http, sub["id"], "active")
    await receiver.stop()
    first = await opened(net)
    second = await opened(net, Consult(net.partner, net.hub))
    await status_of(net.hub.http, sub["id"], "error")
    await receiver.start()
    hits = await receiver.wait_for(2, timeout=5.0)
    assert [h.path for h in hits] == [f"/Task/{first.task}", f"/Task/{second.task}"]
    await status_of(net.hub.http, sub["id"], "active")
