"""The consult network shared by each workflow scenario module (one per module: tests make fresh ids)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from fhir_exchange.definitions import Definitions
from tests.consult.scenario import Network, open_network


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> AsyncIterator[Network]:
    async for network in open_network(tmp_path_factory.mktemp("consult-network"), definitions):
        yield network
