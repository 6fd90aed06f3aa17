"""The search index entries of a resource about to be stored, computed off the event loop when the
resource is big (issue 14: a Patient with 135,000 identifiers took 2 s of the event loop to index,
stalling every other client meanwhile), and a point where the event loop may serve others between the
entries of a big transaction. Both adapters call :func:`extract_entries` in ``put``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fhir_exchange.search.index import Indexer
from fhir_exchange.store.port import ResourceVersion

OFFLOAD_INDEX_BYTES = 256 * 1024  # a body of this size or more is indexed in a worker thread


async def extract_entries(indexer: Indexer | None, version: ResourceVersion, resource: dict[str, Any]
                          ) -> Sequence[Any]:
    if len(version.body) >= OFFLOAD_INDEX_BYTES and indexer is not None:
        return await asyncio.to_thread(indexer, version.type, resource)
    # A unit of work buffers its writes and awaits nothing per entry, so a 10,000-entry transaction
    # Bundle held the event loop for seconds (other clients' reads: 13 ms -> 400 ms). One turn of the
    # loop per resource lets them in between entries.
    await asyncio.sleep(0)
    return indexer(version.type, resource) if indexer is not None else ()
