"""Storage: the async port and its adapters."""

from __future__ import annotations

from collections.abc import Sequence

from fhir_exchange.search.index import Indexer
from fhir_exchange.store.port import ResourceStore


def open_store(url: str, indexer: Indexer | None = None, resource_types: Sequence[str] = ()) -> ResourceStore:
    """The store adapter for a URL: ``sqlite:///path`` or ``mongodb://...``. ``resource_types``: the
    types the store must be ready for (MongoDB creates each type's collection and indexes at start-up)."""
    if url.startswith("sqlite:"):
        from fhir_exchange.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, indexer)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        # Imported here: pymongo is an optional dependency that only MongoDB deployments install.
        from fhir_exchange.store.mongo import MongoStore

        store = MongoStore.from_url(url, indexer)
        store.set_resource_types(resource_types)
        return store
    raise ValueError(f"Unsupported store URL: {url!r} (use sqlite:///path or mongodb://host/db)")
