"""``_list`` (https://hl7.org/fhir/R4/search.html#list) and references written as absolute URLs on this
server's own base (search.html#reference) over HTTP, on the embedded store; the MongoDB run imports these
tests (test_search_list_and_absolute_on_mongo.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.api.conftest import app  # noqa: F401  (the app on the session's definitions)
from tests.store.test_search_http import ids, put, search

OUR_BASE = "http://127.0.0.1:8080/fhir"  # Settings.local_base_urls without public_base_url
ELSEWHERE = "http://elsewhere.example.org/fhir"




def sorted_refs(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
                  if e["search"]["mode"] == mode)


def obs(id: str, subject: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "bp"},
            "subject": {"reference": subject}}


def a_list(id: str, *refs: str, deleted: tuple[str, ...] = ()) -> dict[str, Any]:
    entries = [{"item": {"reference": r}} for r in refs] + [{"item": {"reference": r}, "deleted": True}
                                                            for r in deleted]
    # lst-2: the deleted flag only in a list of changes.
    return {"resourceType": "List", "id": id, "status": "current", "mode": "changes" if deleted else "working",
            "entry": entries}


@pytest.fixture
async def listed(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for pid, gender in (("p1", "male"), ("p2", "female"), ("p3", "female")):
        await put(client, {"resourceType": "Patient", "id": pid, "gender": gender})
    await put(client, obs("o1", "Patient/p1"))
    await put(client, obs("o2", "Patient/p2"))
    await put(client, obs("p1", "Patient/p3"))  # an Observation whose id is a listed Patient's
    await put(client, a_list("l1", "Patient/p1", "Patient/p3", "Observation/o2", deleted=("Patient/p2",)))
    await put(client, a_list("l2", f"{OUR_BASE}/Patient/p2", f"{ELSEWHERE}/Patient/p1"))
    return client


async def test_list_at_type_level(listed: httpx.AsyncClient) -> None:
    assert sorted(ids(await search(listed, "/Patient?_list=l1"))) == ["p1", "p3"]
    assert ids(await search(listed, "/Observation?_list=l1")) == ["o2"]
    # An absolute reference on our base is ours; another server's is not.
    assert ids(await search(listed, "/Patient?_list=l2")) == ["p2"]


async def test_list_combines_with_other_criteria(listed: httpx.AsyncClient) -> None:
    assert ids(await search(listed, "/Patient?_list=l1&gender=female")) == ["p3"]
    assert sorted(ids(await search(listed, "/Patient?_list=l1,l2"))) == ["p1", "p2", "p3"]  # any of them
    assert ids(await search(listed, "/Patient?_list=l1&_list=l2")) == []  # both
    b = await search(listed, "/Patient?_list=l1&_sort=-_id&_count=1")
    assert ids(b) == ["p3"] and b["total"] == 2
    assert "_list=l1" in b["link"][0]["url"]
    b = await search(listed, "/Patient?_list=l1&_revinclude=Observation:subject")
    assert sorted(ids(b)) == ["p1", "p3"] and sorted(ids(b, "include")) == ["o1", "p1"]


async def test_list_at_system_level_keeps_the_types(listed: httpx.AsyncClient) -> None:
    # Observation/p1 exists but is not listed: ids are matched with their types.
    assert sorted_refs(await search(listed, "/?_list=l1")) == ["Observation/o2", "Patient/p1", "Patient/p3"]
    assert sorted_refs(await search(listed, "/?_list=l1&_type=Patient")) == ["Patient/p1", "Patient/p3"]
    assert sorted_refs(await search(listed, "/?_list=l2&_type=Observation")) == []


async def test_an_unknown_or_deleted_list_lists_nothing(listed: httpx.AsyncClient) -> None:
    b = await search(listed, "/Patient?_list=nope")
    assert ids(b) == [] and b["total"] == 0
    assert (await listed.delete("/List/l1")).status_code in (200, 204)
    assert ids(await search(listed, "/Patient?_list=l1")) == []
    assert sorted_refs(await search(listed, "/?_list=l1")) == []
    await search(listed, "/Patient?_list=not%20an%20id", status=400)
    b = await search(listed, "/AllergyIntolerance?_list=$current-allergies", status=400)
    assert b["issue"][0]["code"] == "not-supported"


@pytest.fixture
async def refs(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put(client, {"resourceType": "Patient", "id": "p1", "gender": "male"})
    await put(client, obs("rel", "Patient/p1"))
    await put(client, obs("abs", f"{OUR_BASE}/Patient/p1"))
    await put(client, obs("far", f"{ELSEWHERE}/Patient/p1"))
    return client


async def test_absolute_references_on_our_base_are_local(refs: httpx.AsyncClient) -> None:
    for value in ("Patient/p1", "p1", f"{OUR_BASE}/Patient/p1",
                  "http://test/fhir/Patient/p1"):  # the base this request came in on
        assert sorted(ids(await search(refs, f"/Observation?subject={value}"))) == ["abs", "rel"], value
    assert sorted(ids(await search(refs, "/Observation?subject:Patient.gender=male"))) == ["abs", "rel"]
    b = await search(refs, "/Observation?_id=abs&_include=Observation:subject")
    assert ids(b, "include") == ["p1"]
    assert sorted(ids(await search(refs, "/Patient?_has:Observation:subject:_id=abs,far"))) == ["p1"]


async def test_another_servers_url_matches_only_itself(refs: httpx.AsyncClient) -> None:
    assert ids(await search(refs, f"/Observation?subject={ELSEWHERE}/Patient/p1")) == ["far"]
    assert ids(await search(refs, "/Observation?subject=http://other.example.org/fhir/Patient/p1")) == []


async def test_public_base_url_is_the_base_at_index_time(settings: Settings, definitions: Definitions) -> None:
    public = "https://fhir.example.kr/r4"
    application = create_app(dataclasses.replace(settings, public_base_url=public), definitions=definitions)
    await application.state.services.store.open()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test/fhir") as c:
            await put(c, {"resourceType": "Patient", "id": "p1"})
            await put(c, obs("pub", f"{public}/Patient/p1"))
            await put(c, obs("loopback", f"{OUR_BASE}/Patient/p1"))  # not this server's base any more
            assert ids(await search(c, "/Observation?subject=Patient/p1")) == ["pub"]
            assert ids(await search(c, f"/Observation?subject={public}/Patient/p1")) == ["pub"]
            assert ids(await search(c, f"/Observation?subject={OUR_BASE}/Patient/p1")) == ["loopback"]
    finally:
        await application.state.services.store.close()
