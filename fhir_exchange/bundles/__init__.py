"""Bundles: batch, transaction (http.html#transaction), messages ($process-message, messaging.html)
and document rules (bundle.html#document). ``install(router)`` wires them into a router."""

from __future__ import annotations

from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.unit import UnitContext


def install(router: Router) -> None:
    """Handle ``POST [base]`` Bundles, register ``$process-message`` and the document write rule."""
    from fhir_exchange.bundles import document, message
    from fhir_exchange.bundles.batch import process_batch
    from fhir_exchange.bundles.entries import bundle_of
    from fhir_exchange.bundles.transaction import process_transaction

    async def process(req: FhirRequest, ctx: UnitContext | None = None) -> FhirResponse:
        bundle = bundle_of(req, ("batch", "transaction"))
        if ctx is not None:
            from fhir_exchange.errors import invalid

            raise invalid("A batch or transaction may not be nested in a transaction")
        if bundle["type"] == "batch":
            return await process_batch(router, req, bundle)
        return await process_transaction(router, req, bundle)

    router.bundle_processor = process
    document.install(router.services)
    message.install(router)
