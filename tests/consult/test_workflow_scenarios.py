"""The consult workflow over REST, with authentication on, between a requester (partner), a consultant
(hub) it is affiliated with and a third institution: the happy path, the consent a request rests on,
every Task and ServiceRequest transition and who may make it, the consult note, Communications and
the network. Each test makes its own patient and consult on the module's network (conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.consult.scenario import (
    DEPARTMENT,
    Consult,
    Network,
    advanced,
    affiliation,
    new_id,
    observation,
    opened,
    put,
    refused,
    today,
    visible,
    written,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


# -- the happy path -------------------------------------------------------------------------------------


async def test_happy_path_from_request_to_completed_consult(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await opened(net)
    assert await visible(hub, f"Patient/{c.patient}") and await visible(hub, f"ServiceRequest/{c.request}")
    await written(hub, c.task_resource(status="received"))
    await written(hub, c.task_resource(status="accepted", owner=hub.role_ref))
    # The consultant needs more information: it says so on the Task and asks.
    await written(hub, c.task_resource(status="in-progress", owner=hub.role_ref, business="awaiting-information"))
    question = await written(hub, c.communication(new_id("question")))
    assert await visible(partner, f"Communication/{question['id']}")
    # The requester answers, and says the information is provided.
    answer = await written(partner, c.communication(new_id("answer"), answer=True,
                                                    in_response_to=f"Communication/{question['id']}"))
    assert await visible(hub, f"Communication/{answer['id']}")
    await written(partner, c.task_resource(status="in-progress", owner=hub.role_ref, business="information-provided"))
    # The consult note, then the Task completed with it as output.
    note = await written(hub, c.note(new_id("note")))
    task = await written(hub, c.task_resource(status="completed", owner=hub.role_ref, business="report-available",
                                              output=f"DocumentReference/{note['id']}"))
    assert task["status"] == "completed"
    assert await visible(partner, f"DocumentReference/{note['id']}")
    sr = await written(partner, c.request_resource(status="completed"))
    assert sr["status"] == "completed"
    # The consultant still reads the consult it completed (the grace period).
    assert await visible(hub, f"Patient/{c.patient}") and await visible(hub, f"ServiceRequest/{c.request}")
    # Every write of a client has its Provenance.
    provenance = await partner.http.get("/Provenance", params={"target": f"ServiceRequest/{c.request}"})
    assert provenance.json()["total"] >= 2


# -- the consent a request rests on ---------------------------------------------------------------------


CONSENT_BREAKERS = {
    "inactive": ({"status": "inactive"}, "cw-consent-active"),
    "another-patient": ({"patient": "pat-someone-else"}, "cw-consent-patient"),
    "another-recipient": ({"recipient": "third"}, "cw-consent-recipient"),
    "not-for-treatment": ({"purpose": "HPAYMT"}, "cw-consent-purpose"),
    "not-a-permit": ({"provision_type": "deny"}, "cw-consent-permit"),
    "period-ended": ({"start": "2020-01-01", "end": "past"}, "cw-consent-period"),
    "period-not-begun": ({"start": "future", "end": "2099-12-31"}, "cw-consent-period"),
}


@pytest.mark.parametrize("case", sorted(CONSENT_BREAKERS))
async def test_a_request_without_a_permitting_consent_is_refused(net: Network, case: str) -> None:
    c = Consult(net.partner, net.hub)
    changes, rule = CONSENT_BREAKERS[case]
    changes = dict(changes)
    if changes.get("recipient") == "third":
        changes["recipient"] = net.third.org_ref
    if changes.get("end") == "past":
        changes["end"] = today(net.clock, -1)
    if changes.get("start") == "future":
        changes["start"] = today(net.clock, 2)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource(**changes))
    refused(await put(net.partner, c.request_resource()), 409, rule)
    assert not await visible(net.partner, f"ServiceRequest/{c.request}")


async def test_a_request_citing_no_consent_or_a_missing_one_is_refused(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    # A citation the profile accepts (typed Consent) that names no Consent the server could read.
    sr = c.request_resource(consents=[])
    sr["supportingInfo"] = [{"type": "Consent", "identifier": {"system": "urn:consents", "value": "paper-1"}}]
    refused(await put(net.partner, sr), 409, "cw-consent-exists")
    refused(await put(net.partner, c.request_resource(consents=[new_id("nothing")])), 409, "cw-consent-exists")
    # No supportingInfo at all breaks the consult profile before any workflow rule (cx-sr-4).
    bare = {k: v for k, v in c.request_resource().items() if k != "supportingInfo"}
    assert (await put(net.partner, bare)).status_code == 422


async def test_one_permitting_consent_among_several_is_enough(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    other = new_id("consent")
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource(id=other, status="inactive"))
    await written(net.partner, c.consent_resource())
    await written(net.partner, c.request_resource(consents=[other, c.consent]))


@pytest.mark.parametrize("performer", ["org", "role"])
async def test_the_consent_may_name_one_of_the_consultants_practitioner_roles(net: Network, performer: str) -> None:
    """The recipient is the consultant institution, named by its Organization or one of its PractitionerRoles
    (consent.py), whichever of them the request names as performer."""
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource(recipient=net.hub.role_ref))
    await written(net.partner, c.request_resource(performer=net.hub.org_ref if performer == "org" else
                                                  net.hub.role_ref))
    await written(net.partner, c.task_resource())
    assert await visible(net.hub, f"Patient/{c.patient}")


async def test_a_consent_is_recorded_by_the_institution_it_names(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    refused(await put(net.partner, c.consent_resource(organization=net.hub.org_ref)), 403, "cw-consent-organization")


# -- the ServiceRequest -------------------------------------------------------------------------------


async def test_the_request_is_written_by_its_requesters_institution(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource())
    refused(await put(net.partner, c.request_resource(requester=net.hub.role_ref)), 403, "cw-requester-role")


async def test_an_institution_does_not_request_a_consult_from_itself(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource(recipient=net.partner.org_ref))
    refused(await put(net.partner, c.request_resource(performer=net.partner.org_ref)), 409, "cw-performer")
    refused(await put(net.partner, c.request_resource(performer="Organization/nowhere")), 409, "cw-performer")


async def test_the_consultant_does_not_edit_the_request(net: Network) -> None:
    c = await opened(net)
    changed = {**c.request_resource(), "priority": "urgent"}
    r = await put(net.hub, changed)
    assert r.status_code == 403, r.text
    # A third institution cannot even tell the request exists.
    r = await put(net.third, changed)
    assert r.status_code in (404, 409), r.text
    assert (await net.partner.http.get(f"/ServiceRequest/{c.request}")).json()["priority"] == "routine"


async def test_request_transitions(net: Network) -> None:
    c = await opened(net)
    refused(await put(net.partner, c.request_resource(status="draft")), 409, "cw-transition")
    # Completed only once its Task is.
    refused(await put(net.partner, c.request_resource(status="completed")), 409, "cw-request-completed")
    await written(net.partner, c.request_resource(status="revoked"))
    refused(await put(net.partner, c.request_resource(status="active")), 409, "cw-transition")
    refused(await put(net.partner, c.request_resource(status="completed")), 409, "cw-transition")


async def test_a_draft_request_becomes_active(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource())
    await written(net.partner, c.request_resource(status="draft"))
    # A consult is requested (Task requested) only on an active request.
    refused(await put(net.partner, c.task_resource()), 409, "cw-task-focus")
    await written(net.partner, c.request_resource(status="active"))
    await written(net.partner, c.task_resource())


async def test_revoking_before_work_started_cancels_the_task(net: Network) -> None:
    c = await advanced(await opened(net), "accepted")
    await written(net.partner, c.request_resource(status="revoked"))
    task = (await net.partner.http.get(f"/Task/{c.task}")).json()
    assert task["status"] == "cancelled" and task["statusReason"]["text"].startswith("The requester revoked")
    assert not await visible(net.hub, f"Patient/{c.patient}")


async def test_revoking_after_work_started_is_refused(net: Network) -> None:
    c = await advanced(await opened(net), "in-progress")
    refused(await put(net.partner, c.request_resource(status="revoked")), 409, "cw-request-revoke")
    # The requester asks for an abort instead; the consultant ends the work (failed).
    await written(net.partner, c.task_resource(status="in-progress", owner=net.hub.role_ref,
                                               business="abort-requested"))
    await written(net.hub, c.task_resource(status="failed", owner=net.hub.role_ref, reason="aborted"))
    await written(net.partner, c.request_resource(status="revoked"))


async def test_consult_resources_are_never_deleted(net: Network) -> None:
    c = await opened(net)
    refused(await net.partner.http.delete(f"/Task/{c.task}"), 409, "cw-no-delete")
    refused(await net.partner.http.delete(f"/ServiceRequest/{c.request}"), 409, "cw-no-delete")


# -- the Task -------------------------------------------------------------------------------------------


async def test_the_task_is_created_by_the_requester(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource())
    await written(net.partner, c.request_resource())
    refused(await put(net.hub, c.task_resource()), 403, "cw-task-requester")
    refused(await put(net.third, c.task_resource()), 403, "cw-task-requester")
    # Its facts are the request's.
    refused(await put(net.partner, c.task_resource(**{"for": {"reference": "Patient/someone"}})), 409,
            "cw-task-subject")
    refused(await put(net.partner, c.task_resource(requester={"reference": net.hub.role_ref})), 409,
            "cw-task-requester")
    refused(await put(net.partner, c.task_resource(owner=net.partner.role_ref)), 409, "cw-task-owner")
    refused(await put(net.partner, c.task_resource(owner=net.third.org_ref)), 409, "cw-consent-recipient")


ILLEGAL_TASK_TRANSITIONS = [
    ("requested", "completed"),
    ("requested", "in-progress"),
    ("received", "in-progress"),
    ("accepted", "completed"),
    ("completed", "requested"),
    ("completed", "in-progress"),
    ("rejected", "accepted"),
]


@pytest.mark.parametrize(("before", "after"), ILLEGAL_TASK_TRANSITIONS, ids=lambda s: s)
async def test_illegal_task_transitions_are_refused(net: Network, before: str, after: str) -> None:
    c = await opened(net)
    if before != "requested":
        await advanced(c, before)
    note = f"DocumentReference/{c.request}-note"
    if after == "completed" and before != "completed":
        await written(net.hub, c.note(f"{c.request}-note"))
    refused(await put(net.hub, c.task_resource(status=after, owner=net.hub.role_ref,
                                               output=note if after == "completed" else None)), 409, "cw-transition")


async def test_the_consultant_moves_the_task_through_every_legal_state(net: Network) -> None:
    hub = net.hub
    c = await opened(net)
    for status in ("received", "accepted", "in-progress", "on-hold", "in-progress"):
        await written(hub, c.task_resource(status=status, owner=hub.role_ref))
    await written(hub, c.task_resource(status="failed", owner=hub.role_ref, reason="the patient was transferred"))
    # Rejection, by the consultant, before acceptance.
    c2 = await opened(net)
    await written(hub, c2.task_resource(status="received"))
    await written(hub, c2.task_resource(status="rejected", reason="not our department"))


async def test_who_sets_which_task_status(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await opened(net)
    # The requester neither receives, accepts nor rejects.
    for status in ("received", "accepted", "rejected"):
        refused(await put(partner, c.task_resource(status=status)), 403, "cw-task-status-party")
    # The consultant does not cancel (it rejects).
    refused(await put(hub, c.task_resource(status="cancelled")), 403, "cw-task-status-party")
    await advanced(c, "in-progress")
    # The consultant may record the output before it completes; the requester still does not complete.
    note = await written(hub, c.note(new_id("note")))
    output = f"DocumentReference/{note['id']}"
    await written(hub, c.task_resource(status="in-progress", owner=hub.role_ref, output=output))
    for status in ("completed", "on-hold", "failed"):
        refused(await put(partner, c.task_resource(status=status, owner=hub.role_ref, output=output)), 403,
                "cw-task-status-party")
    # Nor the consultant's businessStatus.
    refused(await put(partner, c.task_resource(status="in-progress", owner=hub.role_ref, output=output,
                                               business="awaiting-information")), 403, "cw-task-status-party")
    # A third institution cannot touch the Task.
    r = await put(net.third, c.task_resource(status="in-progress", owner=hub.role_ref, output=output,
                                             business="abort-requested"))
    assert r.status_code in (404, 409), r.text


async def test_the_requester_cancels_before_work_started(net: Network) -> None:
    for status in ("requested", "received", "accepted"):
        c = await opened(net)
        if status != "requested":
            await advanced(c, status)
        owner = net.hub.role_ref if status == "accepted" else None
        await written(net.partner, c.task_resource(status="cancelled", owner=owner, reason="the patient recovered"))
        assert not await visible(net.hub, f"Patient/{c.patient}"), status
    c = await advanced(await opened(net), "in-progress")
    refused(await put(net.partner, c.task_resource(status="cancelled", owner=net.hub.role_ref, reason="x")), 409,
            "cw-transition")


async def test_which_task_fields_each_party_changes(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await opened(net)
    obs = await written(partner, observation(new_id("obs"), c.patient))
    # The requester adds input and reassigns before acceptance.
    await written(partner, c.task_resource(inputs=[f"Observation/{obs['id']}"], owner=hub.role_ref))
    # The requester changes nothing else ...
    refused(await put(partner, c.task_resource(inputs=[f"Observation/{obs['id']}"], owner=hub.role_ref,
                                               description="please hurry")), 403, "cw-task-fields")
    refused(await put(partner, c.task_resource(inputs=[f"Observation/{obs['id']}"], owner=hub.role_ref,
                                               priority="stat")), 403, "cw-task-fields")
    # ... and nobody changes what the Task is about.
    refused(await put(partner, c.task_resource(inputs=[f"Observation/{obs['id']}"], owner=hub.role_ref,
                                               authoredOn="2025-01-01")), 409, "cw-task-fields")
    # The consultant does not change the input, nor assign the Task outside its institution.
    refused(await put(hub, c.task_resource(status="received", owner=hub.role_ref)), 403, "cw-task-fields")
    refused(await put(hub, c.task_resource(status="received", inputs=[f"Observation/{obs['id']}"],
                                           owner=net.third.role_ref)), 403, "cw-task-owner")
    await written(hub, c.task_resource(status="accepted", inputs=[f"Observation/{obs['id']}"], owner=hub.role_ref,
                                       description="seen by the neurologist"))
    # The consultant reassigns within its institution.
    await written(hub, c.task_resource(status="accepted", inputs=[f"Observation/{obs['id']}"], owner=hub.org_ref,
                                       description="seen by the neurologist"))
    # After acceptance the requester no longer reassigns.
    refused(await put(partner, c.task_resource(status="accepted", inputs=[f"Observation/{obs['id']}"],
                                               owner=hub.role_ref, description="seen by the neurologist")),
            403, "cw-task-owner")


# -- completing: the consult note -----------------------------------------------------------------------


async def test_completing_needs_this_consults_note(net: Network) -> None:
    hub = net.hub
    c = await advanced(await opened(net), "in-progress")
    other = await advanced(await opened(net), "in-progress")
    others_note = await written(hub, other.note(new_id("note")))
    plain = await written(hub, c.note(new_id("doc"), loinc="34133-9"))
    obs = await written(net.partner, observation(new_id("obs"), c.patient))

    def completed(output: str | None) -> dict:
        return c.task_resource(status="completed", owner=hub.role_ref, output=output)

    # Without output the consult profile refuses it first (cx-task-3).
    assert (await put(hub, completed(None))).status_code == 422
    refused(await put(hub, completed(f"DocumentReference/{new_id('missing')}")), 409, "cw-output-note")
    refused(await put(hub, completed(f"DocumentReference/{plain['id']}")), 409, "cw-output-note")
    refused(await put(hub, completed(f"Observation/{obs['id']}")), 409, "cw-output-note")
    refused(await put(hub, completed(f"DocumentReference/{others_note['id']}")), 409, "cw-output-note")
    note = await written(hub, c.note(new_id("note")))
    await written(hub, completed(f"DocumentReference/{note['id']}"))


async def test_the_note_is_the_consultants_and_about_the_consults_patient(net: Network) -> None:
    c = await advanced(await opened(net), "in-progress")
    refused(await put(net.partner, c.note(new_id("note"))), 403, "cw-note-party")
    refused(await put(net.third, c.note(new_id("note"))), 403, "cw-note-party")
    refused(await put(net.hub, c.note(new_id("note"), subject="someone-else")), 409, "cw-note-subject")


# -- Communications -----------------------------------------------------------------------------------


async def test_communications_go_between_the_two_parties(net: Network) -> None:
    hub, partner, third = net.hub, net.partner, net.third
    c = await advanced(await opened(net), "in-progress")
    refused(await put(third, c.communication(new_id("q"), sender=third.role_ref)), 403, "cw-comm-party")
    # The sender is of the institution that writes it.
    refused(await put(hub, c.communication(new_id("q"), sender=partner.role_ref, recipient=hub.role_ref)), 403,
            "cw-comm-party")
    # The recipient is the other party.
    refused(await put(hub, c.communication(new_id("q"), recipient=third.role_ref)), 409, "cw-comm-party")
    refused(await put(hub, c.communication(new_id("q"), recipient=hub.org_ref)), 409, "cw-comm-party")
    # About the consult's patient.
    refused(await put(hub, c.communication(new_id("q"), subject="someone-else")), 409, "cw-comm-subject")
    # A reply answers a Communication of the same consult.
    other = await advanced(await opened(net), "in-progress")
    elsewhere = await written(hub, other.communication(new_id("q")))
    refused(await put(partner, c.communication(new_id("a"), answer=True,
                                               in_response_to=f"Communication/{elsewhere['id']}")), 409,
            "cw-comm-reply")
    refused(await put(partner, c.communication(new_id("a"), answer=True,
                                               in_response_to=f"Communication/{new_id('none')}")), 409,
            "cw-comm-reply")
    # The organizations themselves may be sender and recipient.
    question = await written(hub, c.communication(new_id("q"), sender=hub.org_ref, recipient=partner.org_ref))
    await written(partner, c.communication(new_id("a"), answer=True, in_response_to=f"Communication/{question['id']}"))


async def test_a_communication_about_an_unknown_request_is_refused(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    refused(await put(net.hub, c.communication(new_id("q"))), 403, "cw-comm-party")


# -- the network ------------------------------------------------------------------------------------


async def test_a_partner_requests_only_from_a_hub_it_is_affiliated_with(net: Network) -> None:
    c = Consult(net.partner, net.third)
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource())
    r = await put(net.partner, c.request_resource())
    refused(r, 409, "cw-network")
    assert "not a partner" in r.text


def _departments(*codes: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": DEPARTMENT, "code": code}]} for code in codes]


async def test_an_affiliation_limited_to_other_departments_does_not_cover_the_request(net: Network) -> None:
    # The hub offers the third institution only rehabilitation (21); the request is for neurology (02).
    limited = affiliation(net.hub, net.third, specialty=_departments("21"))
    assert (await net.hub.http.post("/OrganizationAffiliation", json=limited)).status_code == 201
    c = Consult(net.third, net.hub)
    await written(net.third, c.patient_resource())
    await written(net.third, c.consent_resource())
    r = await put(net.third, c.request_resource())
    refused(r, 409, "cw-network")
    assert "does not offer" in r.text
    # An inactive or ended affiliation for neurology changes nothing ...
    for ended in (affiliation(net.hub, net.third, specialty=_departments("02"), active=False),
                  affiliation(net.hub, net.third, specialty=_departments("02"),
                              period={"start": "2020-01-01", "end": today(net.clock, -1)})):
        assert (await net.hub.http.post("/OrganizationAffiliation", json=ended)).status_code == 201
        refused(await put(net.third, c.request_resource()), 409, "cw-network")
    # ... and a second, active affiliation of the same pair offering it covers the request.
    neurology = affiliation(net.hub, net.third, specialty=_departments("02"))
    assert (await net.hub.http.post("/OrganizationAffiliation", json=neurology)).status_code == 201
    await written(net.third, c.request_resource())


async def test_only_the_hub_affiliates_a_partner(net: Network) -> None:
    """An OrganizationAffiliation is a directory entry anyone may write; only the hub's own (it owns it)
    makes a partner: a partner naming itself a hub's partner is not one."""
    c = Consult(net.partner, net.third)
    forged = affiliation(net.third, net.partner)
    assert (await net.partner.http.post("/OrganizationAffiliation", json=forged)).status_code == 201
    await written(net.partner, c.patient_resource())
    await written(net.partner, c.consent_resource())
    refused(await put(net.partner, c.request_resource()), 409, "cw-network")


async def test_communications_and_notes_belong_to_a_consult_request(net: Network) -> None:
    """A ServiceRequest that is not a consult request (no remote-consultation category) has no
    Communications or consult notes of the consult workflow."""
    c = Consult(net.partner, net.hub)
    await written(net.partner, c.patient_resource())
    await written(net.partner, {"resourceType": "ServiceRequest", "id": c.request, "status": "active",
                                "intent": "order", "subject": {"reference": f"Patient/{c.patient}"},
                                "performer": [{"reference": net.hub.org_ref}]})
    refused(await put(net.hub, c.communication(new_id("q"))), 409, "cw-comm-request")
    refused(await put(net.hub, c.note(new_id("note"))), 409, "cw-note-request")
