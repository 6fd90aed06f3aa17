"""The R4 websocket channel (bind-with-id) with a real WebSocket client against the app served by uvicorn on
127.0.0.1: the consultant's bound socket is pinged for its consult, a third institution's is not, and
a socket without a valid token, or binding another institution's Subscription, gets nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import suppress

import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from tests.consult.scenario import Network, opened
from tests.notify.helpers import created, status_of, subscription, topic_subscription


@pytest.fixture
async def ws_base(net: Network) -> AsyncIterator[str]:
    """The same app served over real HTTP (its lifespan already runs in the network fixture)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(net.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/fhir/ws"
    finally:
        server.should_exit = True
        with suppress(asyncio.CancelledError):
            await task


def auth(party_http: object) -> dict[str, str]:
    return {"Authorization": party_http.headers["Authorization"]}  # type: ignore[attr-defined]


async def bind(ws: ClientConnection, sid: str) -> str:
    await ws.send(f"bind {sid}")
    answer = await asyncio.wait_for(ws.recv(), 2)
    assert isinstance(answer, str)
    return answer


async def test_bound_sockets_are_pinged_for_what_their_institution_may_see(net: Network, ws_base: str) -> None:
    hub_sub = await created(net.hub.http, subscription(f"Task?owner={net.hub.org_ref}", "ws://ignored.example/",
                                                       channel="websocket"))
    third_sub = await created(net.third.http, subscription("Task", "ws://ignored.example/", channel="websocket"))
    topic_sub = await created(net.hub.http, topic_subscription("consult-request", "wss://ignored.example/",
                                                               channel="websocket"))
    await status_of(net.hub.http, hub_sub["id"], "active")
    async with websockets.connect(ws_base, additional_headers=auth(net.hub.http)) as hub_ws, \
            websockets.connect(ws_base, additional_headers=auth(net.third.http)) as third_ws:
        assert await bind(hub_ws, hub_sub["id"]) == f"bound {hub_sub['id']}"
        assert await bind(hub_ws, topic_sub["id"]) == f"bound {topic_sub['id']}"
        assert await bind(third_ws, third_sub["id"]) == f"bound {third_sub['id']}"
        # Another institution's Subscription cannot be bound.
        assert (await bind(third_ws, hub_sub["id"])).startswith(f"error {hub_sub['id']}")
        c = await opened(net)
        got = {await asyncio.wait_for(hub_ws.recv(), 1.0), await asyncio.wait_for(hub_ws.recv(), 1.0)}
        assert f"ping {hub_sub['id']}" in got
        [bundle] = [g for g in got if g != f"ping {hub_sub['id']}"]
        assert c.task in str(bundle) and '"event-notification"' in str(bundle)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(third_ws.recv(), 0.5)


async def test_a_socket_without_a_token_is_refused(net: Network, ws_base: str) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(ws_base):
            pass
    assert refused.value.response.status_code == 403
