"""Every write, whatever its route, takes the repository's one write path with the request's actor.

A spy installed as a guard, a write hook and a commit hook records what each sees; REST, batch,
transaction (plain and conditional entries, DELETE included) and message writes must all show up,
with the actor who asked. A guard that refuses refuses on every route, and nothing is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fhir_exchange.api.app import build_router, build_services
from fhir_exchange.bundles.message import CONSULT_EVENT_SYSTEM
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.interactions.hooks import Change, WriteUnit
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.security.actor import Actor
from fhir_exchange.settings import Settings
from fhir_exchange.store.port import ResourceVersion
from tests.bundles.helpers import SYS, bundle, entry, patient

BASE = "http://exchange.example/fhir"
ACTOR = Actor(institution="org-a", client_id="client-a", scopes=frozenset({"system/*.cruds"}))


@dataclasses.dataclass
class Spy:
    guarded: list[tuple[str, str, str, str | None]] = dataclasses.field(default_factory=list)
    written: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    committed: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    refuse: set[str] = dataclasses.field(default_factory=set)  # resource types the guard refuses

    async def guard(self, change: Change, unit: WriteUnit) -> None:
        self.guarded.append((change.method, change.type, change.id, change.actor.client_id))
        assert change.actor == ACTOR
        if change.method == "DELETE":
            assert change.after is None and change.before is not None
        if change.type in self.refuse:
            raise FhirError(Category.FORBIDDEN, f"spy refuses {change.type}")

    async def on_write(self, change: Change, version: ResourceVersion, unit: WriteUnit) -> None:
        assert await unit.uow.read(change.type, change.id) is not None  # inside the unit of work
        self.written.append((change.method, f"{change.type}/{change.id}", version.version_id))

    def after_commit(self, change: Change, version: ResourceVersion) -> None:
        self.committed.append((change.method, f"{change.type}/{change.id}", version.version_id))


@pytest.fixture
async def spied(settings: Settings, definitions: Definitions) -> Any:
    svc = build_services(dataclasses.replace(settings, consult_profiles=False), definitions)
    spy = Spy()
    svc.hooks.guards.append(spy.guard)
    svc.hooks.on_write.append(spy.on_write)
    svc.hooks.after_commit.append(spy.after_commit)
    router = build_router(svc)
    await svc.store.open()
    try:
        yield router, spy
    finally:
        await svc.store.close()


async def send(router: Router, method: str, path: str, body: Any = None, **headers: str) -> FhirResponse:
    return await router.dispatch(FhirRequest(method, path, [], {k.lower().replace("_", "-"): v
                                                                for k, v in headers.items()},
                                             body, BASE, ACTOR))


async def test_rest_writes_take_the_write_path(spied: Any) -> None:
    router, spy = spied
    created = await send(router, "POST", "Patient", patient("r-1"))
    pid = created.json()["id"]  # type: ignore[index]
    await send(router, "PUT", f"Patient/{pid}", {**patient("r-1"), "id": pid, "active": True})
    await send(router, "PATCH", f"Patient/{pid}", [{"op": "add", "path": "/gender", "value": "other"}])
    await send(router, "DELETE", f"Patient/{pid}")
    assert [w[0] for w in spy.written] == ["POST", "PUT", "PATCH", "DELETE"]
    assert spy.committed == spy.written
    assert {g[3] for g in spy.guarded} == {"client-a"}


async def test_batch_transaction_and_message_writes_take_the_write_path(spied: Any) -> None:
    router, spy = spied
    await send(router, "POST", "", bundle("batch", entry("POST", "Patient", patient("b-1")),
                                         entry("PUT", "Patient/b-2", {**patient("b-2"), "id": "b-2"})))
    assert [w[0] for w in spy.written] == ["POST", "PUT"]
    await send(router, "POST", "", bundle(
        "transaction",
        entry("POST", "Patient", patient("t-1"), "urn:uuid:t-1", ifNoneExist=f"identifier={SYS}|t-1"),
        entry("POST", "Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                      "subject": {"reference": "urn:uuid:t-1"}}),
        entry("PUT", f"Patient?identifier={SYS}|b-2", {**patient("b-2"), "active": True}),
        entry("DELETE", f"Patient?identifier={SYS}|b-1")))
    # The spec's order: DELETE, POST, then PUT.
    assert [w[0] for w in spy.written[2:]] == ["DELETE", "POST", "POST", "PUT"]
    assert spy.written[-1] == ("PUT", "Patient/b-2", 2)
    observation = next(w for w in spy.written if w[1].startswith("Observation/"))
    stored = await send(router, "GET", observation[1])
    assert stored.json()["subject"]["reference"].startswith("Patient/")  # type: ignore[index]
    header = {"resourceType": "MessageHeader", "id": "mh-1", "source": {"endpoint": "urn:sender"},
              "eventCoding": {"system": CONSULT_EVENT_SYSTEM, "code": "consult-request"},
              "focus": [{"reference": "urn:uuid:sr-1"}]}
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "consult"},
          "subject": {"reference": "urn:uuid:m-1"}}
    message = {"resourceType": "Bundle", "type": "message", "timestamp": "2024-05-01T10:00:00Z",
               "entry": [{"fullUrl": "urn:uuid:mh-1", "resource": header},
                         {"fullUrl": "urn:uuid:sr-1", "resource": sr},
                         {"fullUrl": "urn:uuid:m-1", "resource": patient("m-1")}]}
    answer = await send(router, "POST", "$process-message", message)
    outcome = answer.json()["entry"][1]["resource"]  # type: ignore[index]
    assert answer.json()["entry"][0]["resource"]["response"]["code"] == "ok", outcome  # type: ignore[index]
    # Entries derived from the message keep the request's base URL (their locations) and actor.
    assert all(BASE in i["diagnostics"] for i in outcome["issue"])
    assert sorted(w[1].split("/")[0] for w in spy.written[-2:]) == ["Patient", "ServiceRequest"]
    assert spy.committed == spy.written


@pytest.mark.parametrize("route", ["rest", "batch", "transaction", "message"])
async def test_a_guard_refusal_holds_on_every_route(spied: Any, route: str) -> None:
    router, spy = spied
    spy.refuse = {"Patient"}
    if route == "rest":
        with pytest.raises(FhirError) as err:
            await send(router, "POST", "Patient", patient("x"))
        assert err.value.status == 403
    elif route == "batch":
        resp = await send(router, "POST", "", bundle("batch", entry("POST", "Patient", patient("x"))))
        assert resp.json()["entry"][0]["response"]["status"].startswith("403")  # type: ignore[index]
    elif route == "transaction":
        with pytest.raises(FhirError) as err:
            await send(router, "POST", "", bundle(
                "transaction", entry("POST", "Observation", {"resourceType": "Observation", "status": "final",
                                                             "code": {"text": "x"}}),
                entry("POST", "Patient", patient("x"))))
        assert err.value.status == 403 and "entry 1" in err.value.diagnostics
    else:
        header = {"resourceType": "MessageHeader", "id": "mh-2", "source": {"endpoint": "urn:sender"},
                  "eventCoding": {"system": CONSULT_EVENT_SYSTEM, "code": "consult-request"},
                  "focus": [{"reference": "urn:uuid:sr-2"}]}
        sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "c"},
              "subject": {"reference": "urn:uuid:p-2"}}
        resp = await send(router, "POST", "$process-message", {
            "resourceType": "Bundle", "type": "message", "timestamp": "2024-05-01T10:00:00Z",
            "entry": [{"fullUrl": "urn:uuid:mh-2", "resource": header}, {"fullUrl": "urn:uuid:sr-2", "resource": sr},
                      {"fullUrl": "urn:uuid:p-2", "resource": patient("p-2")}]})
        assert resp.json()["entry"][0]["resource"]["response"]["code"] == "fatal-error"  # type: ignore[index]
    # Writes before the refusal in the same unit of work were rolled back with it: nothing committed.
    assert all(w[1].split("/")[0] != "Patient" for w in spy.written) and spy.committed == []
    everything = await router.dispatch(FhirRequest("GET", "", [("_summary", "count")], {}, None, BASE))
    assert everything.json()["total"] == 0  # type: ignore[index]
