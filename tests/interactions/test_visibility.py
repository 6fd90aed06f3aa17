"""The repository carries the actor's visibility into every read path and into conditional matching:
what an actor may not see reads as absent (404), counts as nothing, and matches no condition."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.services import Services
from fhir_exchange.search.query import Visibility
from fhir_exchange.security.actor import Actor
from tests.bundles.helpers import SYS, bundle, entry, patient

BASE = "http://x/fhir"
A = Actor(institution="org-a", client_id="a", scopes=frozenset({"system/*.cruds"}))
B = Actor(institution="org-b", client_id="b", scopes=frozenset({"system/*.cruds"}))


class OwnOnly:
    def visibility(self, actor: Actor, at: str) -> Visibility | None:
        return None if actor.system else Visibility(frozenset({actor.institution or ""}), frozenset(), at)


async def as_(router: Router, actor: Actor, method: str, path: str, body: Any = None,
              query: list[tuple[str, str]] | None = None, **headers: str) -> FhirResponse:
    return await router.dispatch(FhirRequest(method, path, query or [], {k.replace("_", "-"): v
                                                                          for k, v in headers.items()},
                                             body, BASE, actor))


@pytest.fixture
def isolated(services: Services, router: Router) -> Router:
    services.access = OwnOnly()
    return router


async def test_what_an_actor_may_not_see_reads_as_absent(isolated: Router) -> None:
    r = isolated
    created = await as_(r, A, "POST", "Patient", patient("v-1"))
    pid = created.json()["id"]  # type: ignore[index]
    assert (await as_(r, A, "GET", f"Patient/{pid}")).status == 200
    for path in (f"Patient/{pid}", f"Patient/{pid}/_history", f"Patient/{pid}/_history/1"):
        with pytest.raises(FhirError) as err:
            await as_(r, B, "GET", path)
        assert err.value.status == 404, path
    assert (await as_(r, B, "GET", "Patient")).json()["total"] == 0  # type: ignore[index]
    assert (await as_(r, B, "GET", "Patient", query=[("_summary", "count")])).json()["total"] == 0  # type: ignore[index]
    assert (await as_(r, B, "GET", "_history")).json()["total"] == 0  # type: ignore[index]
    assert (await as_(r, A, "GET", "Patient/_history")).json()["total"] == 1  # type: ignore[index]
    with pytest.raises(FhirError) as err:
        await as_(r, B, "PATCH", f"Patient/{pid}", [{"op": "add", "path": "/active", "value": True}])
    assert err.value.status == 404


async def test_a_condition_never_matches_what_the_actor_cannot_see(isolated: Router) -> None:
    r = isolated
    await as_(r, A, "POST", "Patient", patient("same"))
    # B's conditional create does not find A's patient: it creates its own.
    mine = await as_(r, B, "POST", "Patient", patient("same"), if_none_exist=f"identifier={SYS}|same")
    assert mine.status == 201
    again = await as_(r, B, "POST", "Patient", patient("same"), if_none_exist=f"identifier={SYS}|same")
    assert again.status == 200 and again.location == mine.location
    # In a transaction too, and a conditional delete of B removes only B's.
    await as_(r, B, "POST", "", bundle("transaction", entry("DELETE", f"Patient?identifier={SYS}|same")))
    assert (await as_(r, A, "GET", "Patient", query=[("identifier", f"{SYS}|same")])).json()["total"] == 1  # type: ignore[index]
    assert (await as_(r, B, "GET", "Patient", query=[("identifier", f"{SYS}|same")])).json()["total"] == 0  # type: ignore[index]


async def test_an_empty_path_segment_is_not_the_type_history(call: Any) -> None:
    with pytest.raises(FhirError) as err:
        await call("GET", "Patient//_history")
    assert err.value.status == 400 and "empty segment" in err.value.diagnostics


async def test_fhirpath_patch_without_operations_changes_nothing(call: Any) -> None:
    # FHIRPath Patch is supported (tests/interactions/test_fhirpath_patch.py); no operation, no change.
    await call("PUT", "Patient/fp", {"resourceType": "Patient", "id": "fp"})
    resp = await call("PATCH", "Patient/fp", {"resourceType": "Parameters", "parameter": []})
    assert resp.status == 200 and resp.json()["meta"]["versionId"] == "1"  # type: ignore[index]
