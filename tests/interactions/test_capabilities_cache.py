"""The CapabilityStatement is cached, and rebuilt when what it is generated from changes."""

from __future__ import annotations

from pathlib import Path

from fhir_exchange.api.app import build_router, build_services, load_definitions
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR

SP = {"resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/patient-nickname",
      "name": "nickname", "status": "active", "description": "Nickname", "code": "nickname",
      "base": ["Patient"], "type": "string", "expression": "Patient.name.where(use='nickname').given"}


def patient_params(doc: dict) -> set[str]:
    patient = next(r for r in doc["rest"][0]["resource"] if r["type"] == "Patient")
    return {p["name"] for p in patient.get("searchParam", [])}


async def test_statement_follows_definitions_and_routes(tmp_path: Path) -> None:
    # Its own Definitions: this test writes a conformance resource.
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False)
    svc = build_services(settings, load_definitions(settings))
    router = build_router(svc)
    await svc.store.open()
    try:
        first = await router.dispatch(FhirRequest("GET", "metadata", base_url="http://a/fhir"))
        again = await router.dispatch(FhirRequest("GET", "metadata", base_url="http://a/fhir"))
        assert again.body is first.body  # served from the cache
        assert "nickname" not in patient_params(first.json() or {})
        created = await router.dispatch(FhirRequest("POST", "SearchParameter", body=SP, base_url="http://a/fhir"))
        assert created.status == 201
        after = (await router.dispatch(FhirRequest("GET", "metadata", base_url="http://a/fhir"))).json() or {}
        assert "nickname" in patient_params(after)
        other_base = (await router.dispatch(FhirRequest("GET", "metadata", base_url="http://b/fhir"))).json() or {}
        assert other_base["implementation"]["url"] == "http://b/fhir"
        router.table.routes = [r for r in router.table.routes if r.interaction != "vread"]
        fewer = (await router.dispatch(FhirRequest("GET", "metadata", base_url="http://b/fhir"))).json() or {}
        assert "vread" not in {i["code"] for i in fewer["rest"][0]["resource"][0]["interaction"]}
    finally:
        await svc.store.close()
