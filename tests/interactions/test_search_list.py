"""``_list`` (https://hl7.org/fhir/R4/search.html#list) as the caller sees it: a List it may not read lists
nothing, and listed resources it may not read stay invisible."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.services import Services
from fhir_exchange.notify.criteria import CriteriaError, parse_criteria
from tests.interactions.test_visibility import A, B, OwnOnly, as_


@pytest.fixture
def isolated(services: Services, router: Router) -> Router:
    services.access = OwnOnly()
    return router


def found(resp: Any) -> list[str]:
    return sorted(e["resource"]["id"] for e in resp.json().get("entry", []))


async def test_list_is_searched_as_the_caller_sees_it(isolated: Router) -> None:
    r = isolated
    pa = (await as_(r, A, "POST", "Patient", {"resourceType": "Patient"})).json()["id"]  # type: ignore[index]
    pb = (await as_(r, B, "POST", "Patient", {"resourceType": "Patient"})).json()["id"]  # type: ignore[index]
    items = [{"item": {"reference": f"Patient/{p}"}} for p in (pa, pb)]
    la = (await as_(r, A, "POST", "List", {"resourceType": "List", "status": "current", "mode": "working",
                                           "entry": items})).json()["id"]  # type: ignore[index]
    assert found(await as_(r, A, "GET", "Patient", query=[("_list", la)])) == [pa]  # B's patient stays hidden
    assert found(await as_(r, B, "GET", "Patient", query=[("_list", la)])) == []  # A's List is not B's to read
    assert (await as_(r, B, "GET", "Patient", query=[("_list", la), ("_summary", "count")])).json()["total"] == 0  # type: ignore[index]
    assert found(await as_(r, B, "GET", "", query=[("_list", la)])) == []


def test_list_is_refused_in_subscription_criteria(shared_definitions: Definitions) -> None:
    # A notification is judged on the changed resource alone: it cannot read the List.
    with pytest.raises(CriteriaError) as err:
        parse_criteria(shared_definitions, "Patient?_list=42")
    assert "_list" in str(err.value)
