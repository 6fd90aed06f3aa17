"""What one request may cost the server: its body (size, inflated size, read time), the CPU its JSON
takes and where that runs, and the bounded re-run of a request whose store transaction lost a race.

http://hl7.org/fhir/R4/http.html#general: the FHIR RESTful API over HTTP; bodies are JSON resources.

- The body is read in chunks within ``max_body_bytes``; ``Content-Encoding: gzip`` is inflated as it
  arrives with the same bound on the inflated size (a zip bomb stops at the limit: 413), any other
  coding is 415. A client that sends nothing for ``body_timeout`` seconds mid-body gets a 400
  OperationOutcome (code ``timeout``): the fault is the client's, so no 5xx, and the worker is freed.
- A body of ``offload_bytes`` or more is parsed in a worker thread and, for a create or an update,
  validated there before dispatch (:class:`AheadValidator`), at most ``big_body_workers`` at once.
  orjson holds the GIL while it parses (about 0.1 s for 30 MiB), but validation is Python, which the
  interpreter interleaves with the event loop: ``/metadata`` and reads go on meanwhile. The memory one
  request may take is bounded through ``max_body_bytes``.
- :func:`dispatch_retrying` re-runs a write whose store transaction raised :class:`TransactionConflict`
  (nothing was written) a few times with jittered backoff, as MongoDB's ``with_transaction`` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from fhir_exchange.errors import Category, FhirError, Issue, TransactionConflict
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router

log = logging.getLogger(__name__)

RETRY_ATTEMPTS = 5  # runs of one request whose transaction conflicts, before its 503 reaches the client
RETRY_BUDGET_S = 5.0  # and no new run starts after this long


def too_large(limit: int, what: str = "The body") -> FhirError:
    return FhirError(Category.TOO_LARGE, f"{what} exceeds the limit of {limit} bytes", code="too-costly")


class Inflater:
    """The identity or gzip content coding of a request body, inflated within ``limit`` bytes."""

    def __init__(self, coding: str | None, limit: int) -> None:
        codings = [c.strip().lower() for c in (coding or "").split(",") if c.strip() and c.strip() != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip")):
            raise FhirError(Category.UNSUPPORTED_MEDIA_TYPE, f"Content-Encoding {coding!r} is not supported: "
                            "send the body uncompressed or gzip-compressed", code="not-supported")
        self.limit = limit
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS) if codings else None
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        if self._zlib is None:
            out = chunk
        else:
            try:
                # max_length: a bomb never inflates past the limit in memory, whatever its ratio.
                out = self._zlib.decompress(chunk, self.limit - self.size + 1)
            except zlib.error as exc:
                raise FhirError(Category.INVALID, f"The gzip body is corrupt: {exc}", code="structure") from None
            if self._zlib.unconsumed_tail:
                raise too_large(self.limit, "The inflated body")
        self.size += len(out)
        if self.size > self.limit:
            raise too_large(self.limit, "The inflated body" if self._zlib is not None else "The body")
        return out

    def finish(self) -> bytes:
        if self._zlib is None:
            return b""
        if not self._zlib.eof:
            raise FhirError(Category.INVALID, "The gzip body is truncated", code="structure")
        return b""


async def read_limited(chunks: AsyncIterator[bytes], inflater: Inflater, timeout: float) -> bytes:
    """The whole body; each chunk must arrive within ``timeout`` seconds of the previous one."""
    parts: list[bytes] = []
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except TimeoutError:
            log.info("A client sent no body bytes for %.0f s: the request was answered 400", timeout)
            raise FhirError(Category.INVALID, f"The body was not received within {timeout:g} s between chunks",
                            code="timeout") from None
        if chunk:
            parts.append(inflater.feed(chunk))
    parts.append(inflater.finish())
    return b"".join(parts)


class Parser:
    """JSON bodies parsed on the event loop when small, in a bounded worker pool when big; a big
    resource is validated there too (:class:`AheadValidator`)."""

    def __init__(self, offload_bytes: int, workers: int) -> None:
        self.offload_bytes = offload_bytes
        self._slots = asyncio.Semaphore(max(1, workers))

    async def validate_ahead(self, repo: Repository, freq: FhirRequest, size: int) -> None:
        validator = repo.svc.validator
        if size >= self.offload_bytes and isinstance(validator, AheadValidator):
            await validator.ahead(repo, freq, self._slots)

    async def loads(self, raw: bytes, check: Callable[[bytes, Any], None] | None = None) -> Any:
        """The parsed body; ``check(raw, body)`` runs beside the parse (it may be as costly)."""
        if len(raw) < self.offload_bytes:
            return _parse(raw, check)
        async with self._slots:
            return await asyncio.to_thread(_parse, raw, check)


# The validation of the current request's resource, made ahead in a worker thread: (the resource as
# validated, its profiles, its type, the issues). A ContextVar: it lives and dies with the request's task.
_AHEAD: ContextVar[tuple[dict[str, Any], tuple[str, ...], str | None, list[Issue]] | None] = ContextVar(
    "validated_ahead", default=None)


class AheadValidator:
    """The services' validator, able to validate a big resource in a worker thread before the request
    is dispatched (:meth:`ahead`). The repository validates on the event loop, synchronously; when it
    asks about the same resource (the same top-level values: a create's copy without ``id`` is) with
    the same profiles, the answer is the one made ahead, instead of seconds of the event loop."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def validate(self, resource: dict[str, Any], *, profiles: Sequence[str] = (),
                 resource_type: str | None = None) -> list[Issue]:
        ahead = _AHEAD.get()
        if ahead is not None:
            shape, wanted, rt, issues = ahead
            if rt == resource_type and wanted == tuple(profiles) and _same(shape, resource):
                _AHEAD.set(None)
                return list(issues)
        result: list[Issue] = self.inner.validate(resource, profiles=profiles, resource_type=resource_type)
        return result

    async def ahead(self, repo: Repository, freq: FhirRequest, slots: asyncio.Semaphore) -> None:
        """Validate ``freq``'s resource in a worker thread as a create (POST [type]) or an update (PUT
        [type]/[id]) will ask for it; anything else is validated where it always was."""
        body = freq.body
        segments = freq.path.strip("/").split("/")
        if not isinstance(body, dict) or body.get("resourceType") != segments[0]:
            return
        if not ((freq.method == "POST" and len(segments) == 1) or (freq.method == "PUT" and len(segments) == 2)):
            return
        shape = dict(body)
        if freq.method == "POST":
            shape.pop("id", None)  # as create() validates it
        rt = segments[0]

        def work() -> tuple[tuple[str, ...], list[Issue]]:
            profiles = tuple(repo.profiles(shape))
            return profiles, self.inner.validate(shape, profiles=profiles, resource_type=rt)

        async with slots:
            profiles, issues = await asyncio.to_thread(work)
        _AHEAD.set((shape, profiles, rt, issues))


def _same(shape: dict[str, Any], resource: dict[str, Any]) -> bool:
    """The same keys with the very same values (strings compared: an ``id`` may be equal, not the same)."""
    if shape.keys() != resource.keys():
        return False
    for key, value in shape.items():
        other = resource[key]
        if value is not other and not (isinstance(value, str) and value == other):
            return False
    return True


def _parse(raw: bytes, check: Callable[[bytes, Any], None] | None) -> Any:
    body = jsonio.loads(raw)  # decimals keep their precision
    if check is not None:
        check(raw, body)
    return body


def _reset(trail: Any) -> None:
    """The audit trail of a run that wrote nothing is forgotten before the next run."""
    for f in dataclasses.fields(trail):
        if f.default_factory is not dataclasses.MISSING:
            setattr(trail, f.name, f.default_factory())
        elif f.default is not dataclasses.MISSING:
            setattr(trail, f.name, f.default)


def conflicted(exc: FhirError) -> bool:
    """A 503 caused by a :class:`TransactionConflict`, though perhaps restated (a transaction Bundle
    names the entry that failed in an error of its own, raised while handling the conflict)."""
    if exc.category is not Category.TRANSIENT:
        return False
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, TransactionConflict):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def dispatch_retrying(router: Router, freq: FhirRequest) -> FhirResponse:
    """``router.dispatch`` run again (a fresh copy of the body, a fresh trail) while its transaction
    conflicts, up to :data:`RETRY_ATTEMPTS` runs within :data:`RETRY_BUDGET_S` seconds."""
    if router.services.store.name == "sqlite":  # one writer at a time: its transactions never conflict
        return await router.dispatch(freq)
    pristine = jsonio.dumps(freq.body) if freq.body is not None else None
    deadline = time.monotonic() + RETRY_BUDGET_S
    delay = 0.01
    attempt = 1
    while True:
        try:
            return await router.dispatch(freq)
        except FhirError as exc:
            if not conflicted(exc):
                raise
            if attempt >= RETRY_ATTEMPTS or time.monotonic() >= deadline:
                log.warning("%s /%s: its transaction conflicted %d times; answered 503", freq.method, freq.path,
                            attempt)
                raise
        attempt += 1
        await asyncio.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, 0.5)
        freq.body = jsonio.loads(pristine) if pristine is not None else None
        freq.assigned_id = None
        _reset(freq.trail)
