"""A consult network with authentication on (partner, hub, third: tests/consult/scenario.py) whose server
may notify endpoints on 127.0.0.1 and retries quickly, and real receivers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.consult import scenario
from tests.consult.scenario import Network
from tests.notify.receiver import Receiver
from tests.security.conftest import BASE

FAST = dict(allow_private_endpoints=True, notify_interval=0.05, notify_retry_min=0.1, notify_retry_max=0.4,
            notify_error_after=2, notify_lease=5.0, notify_timeout=2.0)


def notify_settings(tmp: Path, **overrides: Any) -> Settings:
    base = Settings(data_dir=tmp, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024, auth=True, rate_limit=0,
                    token_lifetime=400 * 86_400, consult_sweep_interval=86_400.0, public_base_url=BASE)
    return dataclasses.replace(base, **{**FAST, **overrides})


async def open_network(settings: Settings, definitions: Definitions, *, hub: str = "emr"
                       ) -> AsyncIterator[Network]:
    """tests.consult.scenario.open_network on these settings."""
    async for net in scenario.open_network(settings.data_dir, definitions, settings=settings, hub=hub):
        yield net


@pytest.fixture
async def net(tmp_path: Path, definitions: Definitions) -> AsyncIterator[Network]:
    async for n in open_network(notify_settings(tmp_path), definitions):
        yield n


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def second_receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()
