"""batch: https://hl7.org/fhir/R4/http.html#transaction (batch) and https://hl7.org/fhir/R4/bundle.html

``POST [base]`` with a ``batch`` Bundle. Each entry is turned into a :class:`FhirRequest` and sent
through the same :meth:`Router.dispatch` as an HTTP request, in its own unit of work: entries are
independent, one failing does not affect the others (its response carries the status and an
OperationOutcome), and references between entries are not resolved (the spec forbids
interdependencies in a batch). Entries run in Bundle order. A nested batch or transaction is refused
per entry, as HAPI FHIR does.
"""

from __future__ import annotations

import logging
from typing import Any

from fhir_exchange.bundles.entries import bundle_entries, entry_request, error_entry, response_bundle, response_entry
from fhir_exchange.errors import Category, FhirError, invalid
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router

log = logging.getLogger(__name__)


async def process_batch(router: Router, req: FhirRequest, bundle: dict[str, Any]) -> FhirResponse:
    raw_entries = bundle_entries(bundle)
    out: list[tuple[dict[str, Any], bytes | None]] = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = entry_request(raw, index, req)
            if not entry.segments and entry.method == "POST":
                raise invalid("A batch entry may not itself be a batch or transaction", entry.where())
            out.append(response_entry(await router.dispatch(entry.req)))
        except FhirError as err:
            out.append(error_entry(err))
        except Exception:  # one broken entry must not lose the answers of the others
            log.exception("Unhandled error in batch entry %d", index)
            out.append(error_entry(FhirError(Category.FAULT, f"Internal server error in entry {index}")))
    return response_bundle("batch-response", router.services.clock.new_id(), out)
