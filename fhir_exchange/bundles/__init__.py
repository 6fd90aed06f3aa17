"""Bundles: batch, transaction (http.html#transaction), messages ($process-message, messaging.html)
and document rules (bundle.html#document). ``install(router)`` adds them to the router's table."""

from __future__ import annotations

from fhir_exchange.bundles import document, message
from fhir_exchange.bundles.batch import process_batch
from fhir_exchange.bundles.entries import bundle_of
from fhir_exchange.bundles.transaction import process_transaction
from fhir_exchange.errors import invalid
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.routes import Route


def install(router: Router) -> None:
    """Handle ``POST [base]`` Bundles, register ``$process-message`` and the document write rule."""

    async def process(repo: Repository, req: FhirRequest) -> FhirResponse:
        bundle = bundle_of(req, ("batch", "transaction"))
        if repo.in_unit is not None:
            raise invalid("A batch or transaction may not be nested in a transaction")
        if bundle["type"] == "batch":
            return await process_batch(router, req, bundle)
        return await process_transaction(router, req, bundle)

    router.table.add(Route("POST", (), "transaction", "system", process))
    router.table.add(Route("POST", (), "batch", "system", process))
    router.services.hooks.add_rule("Bundle", document.document_rules)
    message.install(router)
