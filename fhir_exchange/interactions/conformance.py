"""Conformance resources written to the server live in the store and in :class:`Definitions`.

A write reaches the Definitions of the process that made it through a commit hook (:func:`track`), and
those of every other process on the same store through the change feed (:class:`DefinitionsFeed`); at
start-up :func:`load_stored` adds every stored one again, so a StructureDefinition, ValueSet,
CodeSystem, SearchParameter or Questionnaire PUT before a restart still validates and searches after
it (https://hl7.org/fhir/R4/validation.html: the server validates against the profiles it knows).

A canonical URL defined by a loaded package (the core specification, KR Core, the consult IG) belongs
to that package: :func:`package_guard` refuses a write that would override it (a ValueSet PUT with
the administrative-gender URL must not make every Patient write fail).

A SearchParameter or StructureDefinition whose FHIRPath expressions do not parse or name elements that
do not exist is refused on every write path (422): :func:`install_expression_rules` adds the checks of
:mod:`fhir_exchange.definitions.expressions` as write rules, which ``$validate`` reports too.
"""

from __future__ import annotations

import asyncio
import logging

from fhir_exchange.definitions import Definitions
from fhir_exchange.definitions.definitions import CONFORMANCE_TYPES
from fhir_exchange.definitions.expressions import search_parameter_issues, structure_definition_issues
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.fhir import jsonio
from fhir_exchange.interactions.hooks import Change, CommitHook, Guard, Hooks, WriteUnit
from fhir_exchange.interactions.services import Services
from fhir_exchange.search.query import SearchQuery
from fhir_exchange.store.port import ChangeRecord, ResourceVersion

log = logging.getLogger(__name__)

_PAGE = 500


async def load_stored(svc: Services) -> int:
    """Add every stored conformance resource to the definitions; returns how many."""
    loaded = 0
    for type in sorted(CONFORMANCE_TYPES):
        offset = 0
        while True:
            result = await svc.store.search(SearchQuery(type=type, count=_PAGE, offset=offset, total="none"))
            for v in result.matches:
                svc.definitions.add(jsonio.loads(v.body))
            loaded += len(result.matches)
            if len(result.matches) < _PAGE:
                break
            offset += _PAGE
    if loaded:
        log.info("Loaded %d conformance resources from the store", loaded)
    return loaded


def package_guard(definitions: Definitions) -> Guard:
    async def guard(change: Change, unit: WriteUnit) -> None:
        if change.type not in CONFORMANCE_TYPES or change.after is None:
            return
        url = change.after.get("url")
        if isinstance(url, str) and (package := definitions.package_of(url)) is not None:
            raise FhirError(Category.UNPROCESSABLE,
                            f"The canonical URL {url} is defined by the loaded package {package}; a {change.type} "
                            f"written to the server may not override it (use a URL of your own)",
                            (f"{change.type}.url",), code="business-rule")

    return guard


def install_expression_rules(hooks: Hooks) -> None:
    """Refuse written SearchParameters and StructureDefinitions whose expressions are broken: a rule of
    the one write path, so create, update, patch, conditional writes and Bundle entries all apply it."""
    hooks.add_rule("SearchParameter", search_parameter_issues)
    hooks.add_rule("StructureDefinition", structure_definition_issues)


def track(definitions: Definitions) -> CommitHook:
    """Keep this process's definitions in step with the conformance resources it writes."""

    def hook(change: Change, version: ResourceVersion) -> None:
        if change.type not in CONFORMANCE_TYPES:
            return
        if change.after is None:
            before = change.before_resource()
            if before is not None:
                definitions.remove(before)
        else:
            definitions.add(jsonio.loads(version.body))

    return hook


class DefinitionsFeed:
    """Applies the conformance writes of every process on the same store, read from its change feed."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.cursor = 0
        self._polling = asyncio.Lock()  # the background poll and a worker's catch-up (api/shared.py) take turns

    async def start(self) -> None:
        """Begin after what is committed now (load_stored has read everything up to here)."""
        self.cursor = await self.svc.store.last_change()

    async def poll(self) -> int:
        """Apply the conformance changes committed since the last poll; returns how many."""
        async with self._polling:
            return await self._poll()

    async def _poll(self) -> int:
        applied = 0
        while True:
            records = await self.svc.store.changes(self.cursor, 500)
            for record in records:
                if record.type in CONFORMANCE_TYPES:
                    await self._apply(record)
                    applied += 1
                self.cursor = record.seq
            if len(records) < 500:
                return applied

    async def _apply(self, record: ChangeRecord) -> None:
        defs = self.svc.definitions
        if record.deleted:
            previous = await self.svc.store.vread(record.type, record.id, record.version_id - 1)
            if previous is not None and not previous.deleted:
                defs.remove(jsonio.loads(previous.body))
            return
        v = await self.svc.store.vread(record.type, record.id, record.version_id)
        if v is not None and not v.deleted:
            defs.add(jsonio.loads(v.body))
