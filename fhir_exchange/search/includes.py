"""The ``_include`` / ``_revinclude`` iteration (https://hl7.org/fhir/R4/search.html#revinclude), written
once for every store and the matcher.

:func:`steps` is a sans-IO generator: it yields ``(specs, frontier)`` — the specs to apply (each an
``(Include, reverse)`` pair) and the keys to apply them to — and is sent back the keys that step found,
in any order and with repeats. It keeps the seen set (the page included: a resource is included once,
never a match), applies ``:iterate`` specs again to what the previous step newly found, up to
:data:`MAX_ITERATIONS` steps, and returns the included keys. A store supplies only the one-step lookup
(which applies the caller's visibility: an invisible resource is never found, so never included nor
iterated from) and the key of the final order; :func:`run` and :func:`arun` are the drivers.

Keys are whatever identifies a resource to the store: a rid on SQLite, ``(type, id)`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from fhir_exchange.search.query import Include

MAX_ITERATIONS = 10

# Where :func:`steps` notes that it stopped at MAX_ITERATIONS with resources still to iterate from, for
# the search interaction to say so in the Bundle (a list it sets; a store that runs the loop in a worker
# thread runs it in a copy of the caller's context, which holds the same list).
STOPPED: ContextVar[list[int] | None] = ContextVar("include_iteration_stopped", default=None)

K = TypeVar("K", bound=Hashable)
Spec = tuple[Include, bool]  # (the include, True for _revinclude)
Step = tuple[list[Spec], list[K]]


def steps(include: Sequence[Include], revinclude: Sequence[Include], page: Sequence[K],
          ) -> Generator[Step[K], Iterable[K], list[K]]:
    """Yields each step ``(specs, frontier)``; is sent the keys it found; returns the included keys."""
    specs: list[Spec] = [(i, False) for i in include] + [(i, True) for i in revinclude]
    if not page or not specs:
        return []
    seen: set[K] = set(page)
    found: list[K] = []
    frontier: list[K] = list(page)
    for depth in range(MAX_ITERATIONS):
        active = specs if depth == 0 else [s for s in specs if s[0].iterate]
        if not active:
            break
        new: list[K] = []
        for k in (yield active, frontier):
            if k not in seen:
                seen.add(k)
                new.append(k)
        if not new:
            break
        found.extend(new)
        frontier = new
    else:  # every iteration found something new: the next might have too
        stopped = STOPPED.get()
        if stopped is not None:
            stopped.append(MAX_ITERATIONS)
    return found


def run(lookup: Callable[[list[Spec], list[K]], Iterable[K]], include: Sequence[Include],
        revinclude: Sequence[Include], page: Sequence[K], order: Callable[[K], Any]) -> list[K]:
    """The included keys, sorted by ``order``, with a synchronous one-step ``lookup``."""
    gen = steps(include, revinclude, page)
    try:
        step = next(gen)
        while True:
            step = gen.send(lookup(*step))
    except StopIteration as done:
        return sorted(done.value, key=order)


async def arun(lookup: Callable[[list[Spec], list[K]], Awaitable[Iterable[K]]], include: Sequence[Include],
               revinclude: Sequence[Include], page: Sequence[K], order: Callable[[K], Any]) -> list[K]:
    """The included keys, sorted by ``order``, with an asynchronous one-step ``lookup``."""
    gen = steps(include, revinclude, page)
    try:
        step = next(gen)
        while True:
            step = gen.send(await lookup(*step))
    except StopIteration as done:
        return sorted(done.value, key=order)
