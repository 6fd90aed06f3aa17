"""A hypothesis state machine drives random sequences of create, update (with and without If-Match),
update-as-create, patch and delete through the router, and checks every read, vread and history
against a plain model of what the server must hold."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from fhir_exchange.api.app import build_router, build_services
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR

GENDERS = ["male", "female", "other", "unknown"]
contents = st.fixed_dictionaries({}, optional={"gender": st.sampled_from(GENDERS), "active": st.booleans(),
                                              "birthDate": st.sampled_from(["1970-01-01", "2001-12-31"])})


class RestModel(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        settings = Settings(data_dir=Path(self.tmp.name), cache_dir=str(CACHE_DIR), auth=False)
        self.svc = build_services(settings, DEFINITIONS[0])
        self.router = build_router(self.svc)
        self.loop.run_until_complete(self.svc.store.open())
        # id -> versions; a version is the content dict, or None for a deletion.
        self.model: dict[str, list[dict[str, Any] | None]] = {}

    def teardown(self) -> None:
        self.loop.run_until_complete(self.svc.store.close())
        self.loop.close()
        self.tmp.cleanup()

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
             ) -> FhirResponse | FhirError:
        req = FhirRequest(method, path, [], headers or {}, body, "http://x/fhir")
        try:
            return self.loop.run_until_complete(self.router.dispatch(req))
        except FhirError as err:
            return err

    def current(self, id: str) -> dict[str, Any] | None:
        versions = self.model.get(id)
        return versions[-1] if versions else None

    def write(self, id: str, content: dict[str, Any]) -> None:
        """A write that says what the current version says creates no version (as HAPI FHIR)."""
        versions = self.model.setdefault(id, [])
        if not versions or versions[-1] != content:
            versions.append(content)

    # -- rules -----------------------------------------------------------------------------------

    @initialize()
    def nothing(self) -> None:
        pass

    @rule(target=ids, content=contents)
    def create(self, content: dict[str, Any]) -> str:
        resp = self.call("POST", "Patient", {"resourceType": "Patient", **content})
        assert isinstance(resp, FhirResponse) and resp.status == 201
        id = (resp.json() or {})["id"]
        assert id not in self.model
        self.model[id] = [content]
        return id

    @rule(target=ids, id=st.sampled_from(["fixed-a", "fixed-b"]), content=contents)
    def update_as_create_or_update(self, id: str, content: dict[str, Any]) -> str:
        resp = self.call("PUT", f"Patient/{id}", {"resourceType": "Patient", "id": id, **content})
        assert isinstance(resp, FhirResponse)
        assert resp.status == (200 if self.current(id) is not None else 201)
        self.write(id, content)
        return id

    @rule(id=ids, content=contents, stale=st.booleans())
    def update_if_match(self, id: str, content: dict[str, Any], stale: bool) -> None:
        version = len(self.model[id]) - (1 if stale else 0)
        resp = self.call("PUT", f"Patient/{id}", {"resourceType": "Patient", "id": id, **content},
                         {"if-match": f'W/"{version}"'})
        live = self.current(id) is not None
        if stale or not live:
            assert isinstance(resp, FhirError) and resp.status == 412
        else:
            assert isinstance(resp, FhirResponse) and resp.status == 200
            self.write(id, content)

    @rule(id=ids, gender=st.sampled_from(GENDERS))
    def patch(self, id: str, gender: str) -> None:
        resp = self.call("PATCH", f"Patient/{id}", [{"op": "add", "path": "/gender", "value": gender}])
        cur = self.current(id)
        if cur is None:
            assert isinstance(resp, FhirError) and resp.status == 410
        else:
            assert isinstance(resp, FhirResponse) and resp.status == 200
            self.write(id, {**cur, "gender": gender})

    @rule(id=ids)
    def delete(self, id: str) -> None:
        resp = self.call("DELETE", f"Patient/{id}")
        assert isinstance(resp, FhirResponse) and resp.status == 200
        if self.current(id) is not None:
            self.model[id].append(None)

    @rule(id=st.sampled_from(["never-1", "never-2"]))
    def delete_unknown(self, id: str) -> None:
        resp = self.call("DELETE", f"Patient/{id}")
        assert isinstance(resp, FhirResponse) and resp.status == 200

    # -- invariants --------------------------------------------------------------------------------

    @staticmethod
    def content_of(doc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if k not in ("resourceType", "id", "meta")}

    @invariant()
    def reads_match_the_model(self) -> None:
        for id, versions in self.model.items():
            resp = self.call("GET", f"Patient/{id}")
            if versions[-1] is None:
                assert isinstance(resp, FhirError) and resp.status == 410
            else:
                assert isinstance(resp, FhirResponse)
                doc = resp.json() or {}
                assert self.content_of(doc) == versions[-1]
                assert doc["meta"]["versionId"] == str(len(versions))
                assert resp.etag == f'W/"{len(versions)}"'
        for id in ("never-1", "never-2"):
            unknown = self.call("GET", f"Patient/{id}")
            assert isinstance(unknown, FhirError) and unknown.status == 404

    @invariant()
    def every_version_and_history_match(self) -> None:
        total = 0
        for id, versions in self.model.items():
            for n, content in enumerate(versions, 1):
                resp = self.call("GET", f"Patient/{id}/_history/{n}")
                if content is None:
                    assert isinstance(resp, FhirError) and resp.status == 410
                else:
                    assert isinstance(resp, FhirResponse) and self.content_of(resp.json() or {}) == content
            hist = self.call("GET", f"Patient/{id}/_history")
            assert isinstance(hist, FhirResponse)
            bundle = hist.json() or {}
            assert bundle["total"] == len(versions)
            assert [e["response"]["etag"] for e in bundle.get("entry", [])] == [
                f'W/"{n}"' for n in range(len(versions), 0, -1)]
            total += len(versions)
        type_hist = self.call("GET", "Patient/_history")
        assert isinstance(type_hist, FhirResponse) and (type_hist.json() or {})["total"] == total


# The session's Definitions for every machine (no conformance resources are written here).
DEFINITIONS: list[Definitions] = []


def _run(definitions: Definitions, examples: int) -> None:
    DEFINITIONS[:] = [definitions]
    run_state_machine_as_test(RestModel, settings=settings(
        max_examples=examples, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))


def test_rest_state_machine(definitions: Definitions) -> None:
    _run(definitions, 15)


@pytest.mark.slow
def test_rest_state_machine_long(definitions: Definitions) -> None:
    _run(definitions, 200)
