"""Over HTTP: a SearchParameter or StructureDefinition whose FHIRPath does not parse, or names elements
that do not exist, is refused 422 on every write path; good ones are accepted (SQLite and MongoDB).

The check itself runs over every definition of the loaded packages in
tests/unit/test_definition_expressions.py.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.settings import Settings
from tests.api.conftest import oo
from tests.conftest import (
    CACHE_DIR,
    app,  # noqa: F401 -- Definitions of its own: accepted writes change them
)
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures

BASE = "http://example.org/fhir"


@pytest.fixture(params=["sqlite", "mongodb"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    store_url = request.getfixturevalue("wiped_db_url") if request.param == "mongodb" else None
    return Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024, auth=False,
                    **({"store_url": store_url} if store_url else {}))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811 (the imported fixture)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as c:
        yield c


def search_parameter(expression: str, base: list[str] | None = None, code: str = "nick") -> dict[str, Any]:
    return {"resourceType": "SearchParameter", "url": f"{BASE}/SearchParameter/{code}", "name": code,
            "status": "active", "description": "test", "code": code, "base": base or ["Patient"],
            "type": "string", "expression": expression}


def structure_definition(expression: str, *, type: str = "Patient", path: str = "Patient.name") -> dict[str, Any]:
    constraint = {"key": "tst-1", "severity": "error", "human": "a test rule", "expression": expression}
    elements: list[dict[str, Any]] = [{"id": type, "path": type}]
    if path == type:
        elements[0]["constraint"] = [constraint]
    else:
        elements.append({"id": path, "path": path, "constraint": [constraint]})
    return {"resourceType": "StructureDefinition", "url": f"{BASE}/StructureDefinition/test-{type}",
            "name": f"Test{type}", "status": "active", "kind": "complex-type" if type == "Extension" else "resource",
            "abstract": False, "type": type, "derivation": "constraint",
            "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{type}", "differential": {"element": elements}}


def refused(resp: httpx.Response, expression: str, *words: str) -> None:
    """A 422 whose error issue points at ``expression`` (inside a transaction: at the entry's resource)."""
    assert resp.status_code == 422, resp.text
    issues = [i for i in oo(resp)["issue"] if i["severity"] == "error"
              and (i.get("expression") or [""])[0].endswith(expression.split(".", 1)[1])]
    assert issues, resp.text
    assert issues[0]["code"] in ("processing", "invalid")
    assert all(w in issues[0]["diagnostics"] for w in words), issues[0]["diagnostics"]


async def test_a_search_parameter_that_does_not_parse_is_refused(client: httpx.AsyncClient) -> None:
    resp = await client.post("/SearchParameter", json=search_parameter("Patient.name.where(use = 'x'"))
    refused(resp, "SearchParameter.expression", "does not parse")


async def test_a_search_parameter_naming_a_missing_element_is_refused(client: httpx.AsyncClient) -> None:
    resp = await client.post("/SearchParameter", json=search_parameter("Patient.name.givn"))
    refused(resp, "SearchParameter.expression", "givn", "base Patient")
    # A concrete choice name: FHIRPath sees Observation.value.
    resp = await client.post("/SearchParameter",
                             json=search_parameter("Observation.valueQuantity.value", ["Observation"]))
    refused(resp, "SearchParameter.expression", "valueQuantity")
    # On each of several bases.
    resp = await client.post("/SearchParameter", json=search_parameter(
        "Patient.name.family | Practitioner.name.famly", ["Patient", "Practitioner"]))
    refused(resp, "SearchParameter.expression", "Practitioner", "famly")
    # An element directly on the resource (the walk up to DomainResource must not stop checking).
    resp = await client.post("/SearchParameter", json=search_parameter("Patient.nmae"))
    refused(resp, "SearchParameter.expression", "nmae")
    resp = await client.post("/SearchParameter", json=search_parameter("Patient.meta.lastUpdated | Patient.id"))
    assert resp.status_code == 201, resp.text


async def test_update_and_conditional_create_are_refused_too(client: httpx.AsyncClient) -> None:
    bad = search_parameter("Patient.name.famly")
    refused(await client.put("/SearchParameter/nick", json={**bad, "id": "nick"}), "SearchParameter.expression")
    refused(await client.post("/SearchParameter", json=bad, headers={"If-None-Exist": "url=" + bad["url"]}),
            "SearchParameter.expression")
    # An accepted one cannot be broken by a later update.
    good = {**search_parameter("Patient.name.family"), "id": "nick"}
    assert (await client.put("/SearchParameter/nick", json=good)).status_code == 201
    refused(await client.put("/SearchParameter/nick", json=bad | {"id": "nick"}), "SearchParameter.expression")
    assert (await client.get("/SearchParameter/nick")).json()["expression"] == "Patient.name.family"


async def test_inside_batch_and_transaction(client: httpx.AsyncClient) -> None:
    bad = search_parameter("Patient.name.famly")
    good = search_parameter("Patient.name.family", code="fam2")
    entries = [{"resource": r, "request": {"method": "POST", "url": "SearchParameter"}} for r in (good, bad)]
    resp = await client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    refused(resp, "SearchParameter.expression", "famly")
    assert resp.json()["issue"][-1]["expression"] == ["Bundle.entry[1].resource.expression"]
    assert (await client.get("/SearchParameter", params={"url": good["url"]})).json().get("total", 0) == 0
    resp = await client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert resp.status_code == 200, resp.text
    statuses = [e["response"]["status"] for e in resp.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("422"), statuses
    outcome = resp.json()["entry"][1]["response"]["outcome"]
    errors = [i for i in outcome["issue"] if i["severity"] == "error"]
    assert errors[0]["expression"] == ["SearchParameter.expression"], outcome


async def test_good_search_parameters_are_accepted_and_work(client: httpx.AsyncClient) -> None:
    sp = search_parameter("Patient.name.family | Practitioner.name.family", ["Patient", "Practitioner"], "fam2")
    assert (await client.post("/SearchParameter", json=sp)).status_code == 201
    ext = search_parameter("Patient.extension('http://example.org/nick').value", code="nick")
    assert (await client.post("/SearchParameter", json=ext)).status_code == 201
    for family in ("Kim", "Lee"):
        patient = {"resourceType": "Patient", "name": [{"family": family}]}
        assert (await client.post("/Patient", json=patient)).status_code == 201
    found = (await client.get("/Patient", params={"fam2": "Kim"})).json()
    assert [e["resource"]["name"][0]["family"] for e in found.get("entry", [])] == ["Kim"], found


async def test_a_structure_definition_with_a_broken_constraint_is_refused(client: httpx.AsyncClient) -> None:
    where = "StructureDefinition.differential.element[1].constraint[0].expression"
    refused(await client.post("/StructureDefinition", json=structure_definition("family.exists() and")),
            where, "tst-1", "does not parse")
    refused(await client.post("/StructureDefinition", json=structure_definition("famly.exists()")),
            where, "tst-1", "famly")
    sd = structure_definition("family.exists()")
    sd["differential"]["element"][1]["constraint"].append(
        {"key": "tst-2", "severity": "error", "human": "another", "expression": "given.valu.exists()"})
    refused(await client.post("/StructureDefinition", json=sd),
            "StructureDefinition.differential.element[1].constraint[1].expression", "tst-2", "valu")


async def test_good_structure_definitions_are_accepted(client: httpx.AsyncClient) -> None:
    resp = await client.post("/StructureDefinition", json=structure_definition("family.exists() or given.exists()"))
    assert resp.status_code == 201, resp.text
    # An Extension's constraints name its sub-extensions as if they were elements: only parsing is required.
    ext = structure_definition("nickname.exists() or value.exists()", type="Extension", path="Extension")
    ext["context"] = [{"type": "element", "expression": "Patient"}]
    resp = await client.post("/StructureDefinition", json=ext)
    assert resp.status_code == 201, resp.text
    broken = copy.deepcopy(ext) | {"url": f"{BASE}/StructureDefinition/test-ext-2", "name": "TestExt2"}
    broken["differential"]["element"][0]["constraint"][0]["expression"] = "value.exists() or"
    refused(await client.post("/StructureDefinition", json=broken),
            "StructureDefinition.differential.element[0].constraint[0].expression", "does not parse")


async def test_validate_reports_the_same(client: httpx.AsyncClient) -> None:
    resp = await client.post("/SearchParameter/$validate", json=search_parameter("Patient.name.famly"))
    issues = [i for i in resp.json()["issue"] if i.get("expression") == ["SearchParameter.expression"]
              and i["severity"] == "error"]
    assert issues and "famly" in issues[0]["diagnostics"], resp.text
