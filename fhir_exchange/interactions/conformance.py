"""Conformance resources written to the server live in the store and in :class:`Definitions`.

Writes reach Definitions through ``Services.on_conformance_change`` after their commit; at start-up
:func:`load_stored` adds every stored one again, so a StructureDefinition, ValueSet, CodeSystem,
SearchParameter or Questionnaire PUT before a restart still validates and searches after it
(https://hl7.org/fhir/R4/validation.html: the server validates against the profiles it knows).
"""

from __future__ import annotations

import logging

import orjson

from fhir_exchange.definitions.definitions import CONFORMANCE_TYPES
from fhir_exchange.interactions.services import Services
from fhir_exchange.search.query import SearchQuery

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
                svc.definitions.add(orjson.loads(v.body))
            loaded += len(result.matches)
            if len(result.matches) < _PAGE:
                break
            offset += _PAGE
    if loaded:
        log.info("Loaded %d conformance resources from the store", loaded)
    return loaded
