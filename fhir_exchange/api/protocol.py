"""The HTTP/1.1 connection as ``serve`` runs it: uvicorn's h11 protocol with what slow, broken and
greedy clients need (issue 14), and the quieting of conditions that used to flood the log.

http://hl7.org/fhir/R4/http.html#2.21.0.4: every error a FHIR server answers is an OperationOutcome.

- A connection must complete its request head within ``header_timeout`` seconds of connecting (or of
  its previous response): uvicorn times out only idle keep-alive connections, so a client sending a
  header byte by byte held its socket (and file descriptor) for ever; 1,100 of them made the server
  unreachable. Closed connections are counted and logged once per :data:`LOG_INTERVAL_S`.
- A request uvicorn's parser rejects (an invalid byte in the request line, a head too large) is
  answered with an OperationOutcome in JSON, not uvicorn's plain-text 400.
- The event loop's "socket.accept() out of system resource" (EMFILE: too many open files) and
  uvicorn's per-request warnings ("Exceeded concurrency limit.", "Invalid HTTP request received.")
  are logged once per interval with a count, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
import orjson

from fhir_exchange.api.tls import ClientCertH11Protocol

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 60.0  # a recurring condition is logged at most once per this many seconds


class Throttled:
    """One recurring condition's log line: the first occurrence at once, then at most one line per
    interval saying how many happened since."""

    def __init__(self, logger: logging.Logger, message: str, interval: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.message = message
        self.interval = interval
        self._last = -float("inf")
        self._count = 0

    def hit(self, detail: str = "") -> bool:
        """Count one occurrence; log if the interval has passed. True if it logged."""
        self._count += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        suffix = f" ({self._count} in the last {self.interval:.0f} s)" if self._last > -float("inf") else ""
        self.logger.warning("%s%s%s", self.message, f": {detail}" if detail else "", suffix)
        self._last, self._count = now, 0
        return True


_HEAD_TIMEOUTS = Throttled(log, "Closed connections that did not send a request head in time (slow clients)")


def outcome_400(diagnostics: str) -> bytes:
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "structure", "diagnostics": diagnostics}]})


class CoalescingTransport:
    """The connection's transport, writing what one turn of the event loop wrote in one ``send``.

    uvicorn writes a response's head and its body separately, and with ``TCP_NODELAY`` each write is a
    system call and a packet of its own; a read by id is two small packets. Buffered until the end of
    the loop's turn, head and body leave together (issue 19: a tenth of a read's CPU time was the
    second ``send``). ``close`` writes what is buffered first; everything else is the transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HardenedH11Protocol(ClientCertH11Protocol):
    """uvicorn's h11 protocol (with the client certificate of :mod:`fhir_exchange.api.tls`) plus a
    request-head timeout, OperationOutcome 400s and writes coalesced per loop turn
    (:class:`CoalescingTransport`). :func:`protocol` sets the timeout."""

    header_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request on this connection gets its own time

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # IDLE: no complete request head yet (a request being served has moved past it). An idle keep-
        # alive connection is uvicorn's keep-alive timer's to close, earlier; closing it here is the same.
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        _HEAD_TIMEOUTS.hit(f"no request head within {self.header_timeout:g} s")
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser rejects, as an OperationOutcome."""
        body = outcome_400("The HTTP request is malformed (request line or headers): "
                           + msg.rstrip(".") + ".")
        headers = [(b"content-type", b"application/fhir+json; charset=utf-8"), (b"connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                             reason=b"Bad Request")) or b"")
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # h11 cannot answer in this state: close, as uvicorn would
            pass
        self.transport.close()


def protocol(header_timeout: float) -> type[HardenedH11Protocol]:
    """The protocol class uvicorn should instantiate (``uvicorn.run(http=...)``)."""
    return type("HardenedH11Protocol", (HardenedH11Protocol,), {"header_timeout": header_timeout})


class _ThrottleFilter(logging.Filter):
    """uvicorn's per-request warnings of a recurring condition become :class:`Throttled` lines."""

    def __init__(self, messages: dict[str, str]) -> None:
        super().__init__()
        self._throttles = {m: Throttled(log, text) for m, text in messages.items()}

    def filter(self, record: logging.LogRecord) -> bool:
        throttle = self._throttles.get(record.getMessage())
        if throttle is None:
            return True
        throttle.hit()
        return False


UVICORN_MESSAGES = {
    "Exceeded concurrency limit.": "Connections over the limit were answered 503 (FHIR_EXCHANGE_MAX_CONNECTIONS)",
    "Invalid HTTP request received.": "Malformed HTTP requests were answered 400",
}


def quiet_uvicorn() -> None:
    """Throttle uvicorn's recurring warnings (a filter, not a handler: the log format stays the app's)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ThrottleFilter) for f in logger.filters):
        logger.addFilter(_ThrottleFilter(UVICORN_MESSAGES))


_RESOURCES = Throttled(log, "Cannot accept connections: out of system resources; accepting again in 1 s")


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio logs "socket.accept() out of system resource" with a traceback at every retry (once a
    second per listening socket for as long as the file descriptors are used up): one line per
    interval instead, naming the error. Anything else goes to the handler there was."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            exc = context.get("exception")
            _RESOURCES.hit(f"{type(exc).__name__}: {exc}" if exc else "")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
