"""Storage: the async port and its adapters."""

from __future__ import annotations

from fhir_exchange.store.port import Indexer, ResourceStore


def open_store(url: str, indexer: Indexer | None = None) -> ResourceStore:
    """The store adapter for a URL: ``sqlite:///path`` or ``mongodb://...``."""
    if url.startswith("sqlite:"):
        from fhir_exchange.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, indexer)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from fhir_exchange.store.mongo import MongoStore  # type: ignore[import-not-found]

        return MongoStore.from_url(url, indexer)  # type: ignore[no-any-return]
    raise ValueError(f"Unsupported store URL: {url!r} (use sqlite:///path or mongodb://host/db)")
