"""Consent decides access: what the consultant institution reads while the consent permits (the
patient, the request, what it cites, the Task's input), what a deny provision withholds, the grace
period after completion, the end of access with a rejected or cancelled Task, a withdrawn consent or a
consent whose period ended; and that a third institution reads nothing of it, whichever way it asks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhir_exchange.api.app import consult_workflow
from fhir_exchange.interactions.consult import EXPIRED, WITHDRAWN, Sweep
from tests.consult.scenario import (
    LOINC,
    TASK_CODE,
    Consult,
    Network,
    Party,
    advanced,
    deny_class,
    deny_label,
    new_id,
    observation,
    opened,
    put,
    today,
    visible,
    written,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def search(party: Party, path: str, **params: str) -> dict[str, Any]:
    r = await party.http.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"}


async def sees_consult(party: Party, c: Consult, *extra: str) -> bool:
    """Whether ``party`` reads the consult's patient and request, by every way of asking; one answer for all
    (a mix is a failure)."""
    refs = [f"Patient/{c.patient}", f"ServiceRequest/{c.request}", *extra]
    reads = {ref: await visible(party, ref) for ref in refs}
    patients = await search(party, "/Patient", _id=c.patient)
    count = await search(party, "/Patient", _id=c.patient, _summary="count")
    included = await search(party, "/ServiceRequest", _id=c.request, _include="ServiceRequest:subject")
    revincluded = await search(party, "/Patient", _id=c.patient, _revinclude="ServiceRequest:subject")
    everything = await party.http.get(f"/Patient/{c.patient}/$everything")
    answers = {
        **reads,
        "search": ids(patients) == {f"Patient/{c.patient}"},
        "count": count["total"] == 1,
        "_include": ids(included) == {f"ServiceRequest/{c.request}", f"Patient/{c.patient}"},
        "_revinclude": ids(revincluded) == {f"ServiceRequest/{c.request}", f"Patient/{c.patient}"},
        "$everything": everything.status_code == 200,
    }
    if not any(answers.values()):
        assert ids(patients) == set() and count["total"] == 0 and ids(included) == set()
        assert everything.status_code == 404, everything.text
        return False
    assert all(answers.values()), answers
    compartment = {ref for ref in extra if not ref.startswith("Task/")}  # Task is not in the Patient compartment
    assert {f"Patient/{c.patient}", f"ServiceRequest/{c.request}", *compartment} <= ids(everything.json())
    return True


# -- while the consent permits --------------------------------------------------------------------------


async def test_the_consultant_reads_what_the_consult_cites_and_a_third_institution_nothing(net: Network) -> None:
    partner, hub, third = net.partner, net.hub, net.third
    c = Consult(partner, hub)
    await written(partner, c.patient_resource())
    cited = await written(partner, observation(new_id("obs"), c.patient))
    given = await written(partner, observation(new_id("obs"), c.patient))
    uncited = await written(partner, observation(new_id("obs"), c.patient))
    await written(partner, c.consent_resource())
    await written(partner, c.request_resource(supporting=[f"Observation/{cited['id']}"]))
    await written(partner, c.task_resource(inputs=[f"Observation/{given['id']}"]))
    refs = [f"Observation/{cited['id']}", f"Observation/{given['id']}", f"Task/{c.task}", f"Consent/{c.consent}"]
    assert await sees_consult(hub, c, *refs)
    assert not await visible(hub, f"Observation/{uncited['id']}")
    observations = await search(hub, "/Observation", subject=f"Patient/{c.patient}")
    assert ids(observations) == {f"Observation/{cited['id']}", f"Observation/{given['id']}"}
    assert not await sees_consult(third, c)
    for ref in refs:
        assert not await visible(third, ref), ref
    assert ids(await search(third, "/Task", focus=f"ServiceRequest/{c.request}")) == set()
    # Input added later is readable at once; input removed is not.
    await written(partner, c.task_resource(inputs=[f"Observation/{uncited['id']}"]))
    assert await visible(hub, f"Observation/{uncited['id']}")
    assert not await visible(hub, f"Observation/{given['id']}")


async def test_a_deny_provision_for_a_class_withholds_it(net: Network) -> None:
    partner, hub = net.partner, net.hub
    c = Consult(partner, hub)
    await written(partner, c.patient_resource())
    obs = await written(partner, observation(new_id("obs"), c.patient))
    await written(partner, c.consent_resource(deny=[deny_class("Observation")]))
    await written(partner, c.request_resource(supporting=[f"Observation/{obs['id']}"]))
    await written(partner, c.task_resource())
    assert await sees_consult(hub, c)
    assert not await visible(hub, f"Observation/{obs['id']}")
    assert ids(await search(hub, "/Observation", subject=f"Patient/{c.patient}")) == set()


async def test_a_deny_provision_for_a_security_label_withholds_what_carries_it(net: Network) -> None:
    partner, hub = net.partner, net.hub
    c = Consult(partner, hub)
    await written(partner, c.patient_resource())
    restricted = await written(partner, observation(new_id("obs"), c.patient, label="R"))
    normal = await written(partner, observation(new_id("obs"), c.patient, label="N"))
    await written(partner, c.consent_resource(deny=[deny_label("R")]))
    await written(partner, c.request_resource(supporting=[f"Observation/{restricted['id']}",
                                                          f"Observation/{normal['id']}"]))
    await written(partner, c.task_resource())
    assert await visible(hub, f"Observation/{normal['id']}")
    assert not await visible(hub, f"Observation/{restricted['id']}")
    # Changing the consent is reflected at once: the denial lifted, the observation is readable.
    await written(partner, c.consent_resource())
    assert await visible(hub, f"Observation/{restricted['id']}")


async def test_what_is_reached_only_through_a_withheld_resource_is_withheld_with_it(net: Network) -> None:
    partner, hub = net.partner, net.hub
    c = Consult(partner, hub)
    await written(partner, c.patient_resource())
    binary = await written(partner, {"resourceType": "Binary", "id": new_id("bin"), "contentType": "application/pdf",
                                     "data": "JVBERi0xLjQK"})
    doc = await written(partner, {
        "resourceType": "DocumentReference", "id": new_id("doc"), "status": "current",
        "subject": {"reference": f"Patient/{c.patient}"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/{binary['id']}"}}]})
    await written(partner, c.consent_resource(deny=[deny_class("DocumentReference")]))
    await written(partner, c.request_resource(supporting=[f"DocumentReference/{doc['id']}"]))
    await written(partner, c.task_resource())
    assert await sees_consult(hub, c)
    assert not await visible(hub, f"DocumentReference/{doc['id']}")
    assert not await visible(hub, f"Binary/{binary['id']}")
    await written(partner, c.consent_resource())  # the denial lifted: both readable at once
    assert await visible(hub, f"DocumentReference/{doc['id']}")
    assert await visible(hub, f"Binary/{binary['id']}")


# -- when access ends -------------------------------------------------------------------------------


async def test_a_rejected_or_cancelled_task_gives_no_access(net: Network) -> None:
    c = await opened(net)
    await written(net.hub, c.task_resource(status="rejected", reason="not our department"))
    assert not await sees_consult(net.hub, c)
    c = await advanced(await opened(net), "accepted")
    await written(net.partner, c.task_resource(status="cancelled", owner=net.hub.role_ref, reason="recovered"))
    assert not await sees_consult(net.hub, c)


@pytest.mark.parametrize(("status", "becomes"), [("requested", "cancelled"), ("accepted", "cancelled"),
                                                 ("in-progress", "failed"), ("on-hold", "failed")])
async def test_withdrawing_the_consent_ends_the_consult_and_access_at_once(net: Network, status: str,
                                                                         becomes: str) -> None:
    partner, hub = net.partner, net.hub
    c = await opened(net)
    if status != "requested":
        await advanced(c, status)
    assert await sees_consult(hub, c, f"Task/{c.task}")
    await written(partner, c.consent_resource(status="inactive"))
    task = (await partner.http.get(f"/Task/{c.task}")).json()
    assert task["status"] == becomes and task["statusReason"]["text"] == WITHDRAWN
    sr = (await partner.http.get(f"/ServiceRequest/{c.request}")).json()
    assert sr["status"] == "revoked"
    for target in (f"Task/{c.task}", f"ServiceRequest/{c.request}"):
        provenance = await search(partner, "/Provenance", target=target)
        reasons = [p["resource"].get("reason", [{}])[0].get("text") for p in provenance["entry"]]
        assert WITHDRAWN in reasons, provenance
    assert not await sees_consult(hub, c)
    assert not await visible(hub, f"Task/{c.task}")
    # A withdrawn consent is not revived: the request stays revoked.
    refused_again = await put(partner, c.consent_resource())
    assert refused_again.status_code == 200
    assert (await partner.http.get(f"/ServiceRequest/{c.request}")).json()["status"] == "revoked"
    assert not await sees_consult(hub, c)


@pytest.mark.parametrize("how", ["entered-in-error", "deleted"])
async def test_a_consent_entered_in_error_or_deleted_is_withdrawn_too(net: Network, how: str) -> None:
    partner, hub = net.partner, net.hub
    c = await advanced(await opened(net), "accepted")
    if how == "deleted":
        assert (await partner.http.delete(f"/Consent/{c.consent}")).status_code in (200, 204)
    else:
        await written(partner, c.consent_resource(status=how))
    task = (await partner.http.get(f"/Task/{c.task}")).json()
    assert task["status"] == "cancelled" and task["statusReason"]["text"] == WITHDRAWN
    assert (await partner.http.get(f"/ServiceRequest/{c.request}")).json()["status"] == "revoked"
    assert not await sees_consult(hub, c)


async def test_a_completed_consult_stays_readable_for_the_grace_period_only(net: Network) -> None:
    hub = net.hub
    c = await advanced(await opened(net), "completed")
    assert await sees_consult(hub, c)
    try:
        net.clock.offset = timedelta(days=29)
        assert await sees_consult(hub, c)
        net.clock.offset = timedelta(days=31)
        assert not await sees_consult(hub, c)
        # The requester keeps what the consultant wrote.
        assert await visible(net.partner, f"DocumentReference/{c.request}-note")
    finally:
        net.clock.offset = timedelta(0)


async def test_the_grace_period_counts_from_the_completion_the_server_recorded(net: Network) -> None:
    """Task.lastModified is the client's say: an old one (as the example Task has) does not end the grace at
    once, and one far ahead does not stretch it."""
    hub = net.hub
    c = await advanced(await opened(net), "completed", lastModified="2025-03-05T16:00:00+09:00")
    assert await sees_consult(hub, c)
    c = await advanced(await opened(net), "completed", lastModified="2099-01-01T00:00:00Z")
    try:
        net.clock.offset = timedelta(days=31)
        assert not await sees_consult(hub, c)
    finally:
        net.clock.offset = timedelta(0)


async def test_an_open_follow_up_keeps_the_consult_readable_and_its_completion_restarts_the_grace(
        net: Network) -> None:
    """The grace ends access to a completed consult while the consultant has nothing left to do; a follow-up
    Task it owns is live (access.py: "while the Task is live"), and its completion starts a new grace."""
    partner, hub = net.partner, net.hub
    c = await advanced(await opened(net), "completed")
    follow_up = new_id("follow-up")
    due = today(net.clock, 60)
    task = c.task_resource(id=follow_up, code={"coding": [{"system": TASK_CODE, "code": "follow-up"}]},
                           partOf=[{"reference": f"Task/{c.task}"}], restriction={"period": {"end": due}})
    await written(partner, task)
    try:
        net.clock.offset = timedelta(days=31)
        assert await sees_consult(hub, c, f"Task/{follow_up}")
        note = await written(hub, c.note(new_id("note")))
        for status in ("accepted", "in-progress"):
            await written(hub, {**task, "status": status, "owner": {"reference": hub.role_ref}})
        await written(hub, {**task, "status": "completed", "owner": {"reference": hub.role_ref},
                            "output": [{"type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
                                        "valueReference": {"reference": f"DocumentReference/{note['id']}"}}]})
        net.clock.offset = timedelta(days=31 + 29)
        assert await sees_consult(hub, c, f"Task/{follow_up}")
        net.clock.offset = timedelta(days=31 + 31)
        assert not await sees_consult(hub, c)
    finally:
        net.clock.offset = timedelta(0)


async def test_access_ends_with_the_consent_period_and_the_sweep_cancels_the_consult(net: Network) -> None:
    partner, hub = net.partner, net.hub
    c = Consult(partner, hub)
    await written(partner, c.patient_resource())
    await written(partner, c.consent_resource(start=today(net.clock, -1), end=today(net.clock, 2)))
    await written(partner, c.request_resource())
    await written(partner, c.task_resource())
    await advanced(c, "accepted")
    assert await sees_consult(hub, c)
    svc = net.app.state.services
    try:
        net.clock.offset = timedelta(days=4)
        assert not await sees_consult(hub, c)
        assert await Sweep(svc, consult_workflow(svc.settings, svc.definitions)).run() >= 1
        task = (await partner.http.get(f"/Task/{c.task}")).json()
        assert task["status"] == "cancelled" and task["statusReason"]["text"] == EXPIRED
        assert (await partner.http.get(f"/ServiceRequest/{c.request}")).json()["status"] == "revoked"
    finally:
        net.clock.offset = timedelta(0)
