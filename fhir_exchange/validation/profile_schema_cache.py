"""Compiled profiles, cached per canonical and definitions generation: https://hl7.org/fhir/R4/profiling.html#snapshot.

A profile is used through its snapshot (given, or generated from the differential by
:mod:`snapshot`), compiled into the element tree of :mod:`schema`. The tree also carries what the
walker decides once per element (:mod:`profile_compile`), so it lives exactly as long as the
definitions it was built from: every entry is dropped when ``Definitions.generation`` moves.
"""

from __future__ import annotations

import threading
from typing import Final, Literal

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.schema import StructureSchema, compile_structure
from fhir_exchange.validation.snapshot import SnapshotError, SnapshotGenerator

CORE_PREFIX: Final = "http://hl7.org/fhir/StructureDefinition/"


class ProfileError(Exception):
    """A profile that cannot be used (no snapshot could be generated)."""


class ProfileSchemas:
    """url -> compiled profile (or the reason it cannot be used), and which urls are core types."""

    def __init__(self, definitions: Definitions, snapshots: SnapshotGenerator) -> None:
        self.defs = definitions
        self.snapshots = snapshots
        self._lock = threading.RLock()
        self._generation = -1
        self._schemas: dict[str, StructureSchema | ProfileError | None] = {}
        self._core_urls: set[str] | None = None
        self._is_core: dict[str, bool] = {}

    def schema(self, url: str) -> StructureSchema | None:
        """The compiled profile, None when unknown; raises ProfileError when unusable."""
        if self._generation != self.defs.generation:
            with self._lock:
                self._schemas.clear()
                self._core_urls = None
                self._is_core.clear()
                self._generation = self.defs.generation
        hit: StructureSchema | ProfileError | Literal[False] | None = self._schemas.get(url, False)
        if hit is False:
            with self._lock:
                sd = self.defs.resolve(url)
                if sd is None and "|" in url:
                    sd = self.defs.resolve(url.partition("|")[0])
                if sd is None or sd.get("resourceType") != "StructureDefinition":
                    hit = None
                else:
                    try:
                        full = self.snapshots.with_snapshot(sd)
                        # Generated snapshots say what the profile changed; given ones do not.
                        changed = self.snapshots.changed.get(sd.get("url", "")) if full is not sd else None
                        hit = compile_structure(full, changed=changed)
                    except (SnapshotError, ValueError, KeyError, TypeError) as e:
                        hit = ProfileError(f"Profile {url} cannot be used: {e}")
                self._schemas[url] = hit
        if isinstance(hit, ProfileError):
            raise hit
        return hit

    def safe_schema(self, url: str) -> StructureSchema | None:
        try:
            return self.schema(url)
        except ProfileError:
            return None

    def is_core(self, url: str | None) -> bool:
        if not url or not url.startswith(CORE_PREFIX):
            return False
        hit = self._is_core.get(url)
        if hit is None:
            hit = self._is_core[url] = self._compute_is_core(url)
        return hit

    def _compute_is_core(self, url: str) -> bool:
        if self._core_urls is None:
            self._core_urls = {f"{CORE_PREFIX}{t}" for t in self.defs.resource_types()}
        name = url[len(CORE_PREFIX):].partition("|")[0]
        if url.partition("|")[0] in self._core_urls:
            return True
        sd = self.defs.structure_definition(name)
        return sd is not None and sd.get("derivation") != "constraint" and sd.get("url") == url.partition("|")[0]
