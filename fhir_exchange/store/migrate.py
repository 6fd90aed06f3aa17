"""Move an installation from one store to another: ``fhir-exchange migrate --from ... --to ...``.

Why through the port and not a table dump: the source is read only with ``history`` (every version of
every resource, delete markers included, each with the method that made it) and ``read``, so any
adapter can be the source; the target must be able to bulk-load versions as they are
(``import_versions``; MongoDB has it), keeping version ids, lastUpdated and the stored bytes, and
re-extracting the search values of current versions with the target's indexer.

The copy is idempotent (re-run after an interruption) and is verified afterwards by comparing every
version (vread) and every resource's current version (read) on both sides. Run it with the server
stopped: writes during the copy may be missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.store.port import HistoryQuery, ResourceStore, ResourceVersion

PAGE = 500


class BulkTarget(Protocol):
    async def import_versions(self, versions: list[ResourceVersion]) -> int: ...


@dataclass(slots=True)
class MigrationReport:
    versions: int = 0
    copied: int = 0  # versions the target did not have yet
    resources: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _same(a: ResourceVersion | None, b: ResourceVersion | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.type, a.id, a.version_id, a.last_updated, a.deleted, a.body) == \
        (b.type, b.id, b.version_id, b.last_updated, b.deleted, b.body)


async def _source_versions(source: ResourceStore) -> list[ResourceVersion]:
    """Every version, pinned to the history as it is now (``till``), oldest first."""
    first = await source.history(HistoryQuery(count=1))
    if not first.versions:
        return []
    till = first.versions[0].last_updated
    out: list[ResourceVersion] = []
    offset = 0
    while True:
        page = await source.history(HistoryQuery(till=till, count=PAGE, offset=offset))
        out.extend(page.versions)
        offset += PAGE
        if len(page.versions) < PAGE:
            break
    out.reverse()
    return out


async def migrate(source: ResourceStore, target: ResourceStore, *,
                  progress: Callable[[int, int], Any] | None = None) -> MigrationReport:
    """Copy every version of every resource from ``source`` to ``target``, then verify the copy."""
    importer = getattr(target, "import_versions", None)
    if importer is None:
        raise ValueError(f"The {target.name} store cannot bulk-load versions")
    versions = await _source_versions(source)
    report = MigrationReport(versions=len(versions))
    for start in range(0, len(versions), PAGE):
        report.copied += await importer(versions[start:start + PAGE])
        if progress:
            progress(min(start + PAGE, len(versions)), len(versions))
    # Verification: every version, and every resource's current version, identical on both sides.
    current: dict[tuple[str, str], int] = {}
    for v in versions:
        got = await target.vread(v.type, v.id, v.version_id)
        if not _same(v, got) or (got is not None and got.method != v.method):
            report.mismatches.append(f"{v.type}/{v.id}/_history/{v.version_id}")
        current[(v.type, v.id)] = max(current.get((v.type, v.id), 0), v.version_id)
    report.resources = len(current)
    for type, id in current:
        a, b = await source.read(type, id), await target.read(type, id)
        if not _same(a, b):
            report.mismatches.append(f"{type}/{id} (current)")
    return report
