"""The consult workflow's rules hold whatever the path: a transaction Bundle (in any order of its entries,
all or nothing) and a FHIR message ($process-message with a consult event: a refused message is answered
with a fatal-error response message naming the rule, and changes nothing)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.consult.scenario import (
    Consult,
    Network,
    Party,
    advanced,
    fatal,
    message,
    new_id,
    ok_message,
    opened,
    refused,
    rules,
    transaction,
    visible,
    written,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def post(party: Party, bundle: dict[str, Any]) -> httpx.Response:
    return await party.http.post("", json=bundle)


async def process(party: Party, bundle: dict[str, Any]) -> httpx.Response:
    return await party.http.post("/$process-message", json=bundle)


async def status_of(party: Party, ref: str) -> str | None:
    r = await party.http.get(f"/{ref}")
    return r.json().get("status") if r.status_code == 200 else None


def request_resources(c: Consult, **consent: Any) -> list[dict[str, Any]]:
    return [c.patient_resource(), c.consent_resource(**consent), c.request_resource(), c.task_resource()]


# -- transactions -------------------------------------------------------------------------------------


async def test_a_transaction_requests_a_consult_in_any_order_of_its_entries(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    r = await post(net.partner, transaction(*reversed(request_resources(c))))  # the Task first, the Patient last
    assert r.status_code == 200, r.text
    assert all(e["response"]["status"].startswith("201") for e in r.json()["entry"])
    assert await visible(net.hub, f"Patient/{c.patient}")


@pytest.mark.parametrize(("consent", "rule"), [({"status": "inactive"}, "cw-consent-active"),
                                               ({"purpose": "HPAYMT"}, "cw-consent-purpose"),
                                               ({"start": "2020-01-01", "end": "2021-01-01"}, "cw-consent-period")])
async def test_a_transaction_breaking_a_consent_rule_writes_nothing(net: Network, consent: dict[str, Any],
                                                                    rule: str) -> None:
    c = Consult(net.partner, net.hub)
    refused(await post(net.partner, transaction(*request_resources(c, **consent))), 409, rule)
    for ref in (f"Patient/{c.patient}", f"Consent/{c.consent}", f"ServiceRequest/{c.request}", f"Task/{c.task}"):
        assert not await visible(net.partner, ref), ref


async def test_a_transaction_to_a_hub_the_partner_is_not_affiliated_with_is_refused(net: Network) -> None:
    c = Consult(net.partner, net.third)
    refused(await post(net.partner, transaction(*request_resources(c))), 409, "cw-network")
    assert not await visible(net.partner, f"Patient/{c.patient}")


async def test_a_transaction_breaking_a_task_rule_writes_nothing(net: Network) -> None:
    c = await opened(net)
    note = c.note(new_id("note"))
    completed = c.task_resource(status="completed", owner=net.hub.role_ref,
                                output=f"DocumentReference/{note['id']}")
    refused(await post(net.hub, transaction(completed, note)), 409, "cw-transition")
    assert not await visible(net.hub, f"DocumentReference/{note['id']}")
    # The requester's own write in the same transaction as a refused one is rolled back with it.
    refused(await post(net.partner, transaction(c.task_resource(status="accepted"),
                                                {**c.request_resource(), "priority": "urgent"})), 403,
            "cw-task-status-party")
    assert (await net.partner.http.get(f"/ServiceRequest/{c.request}")).json()["priority"] == "routine"


async def test_a_transaction_completes_the_consult_with_the_note_after_the_task(net: Network) -> None:
    c = await advanced(await opened(net), "in-progress")
    other = await advanced(await opened(net), "in-progress")
    others_note = await written(net.hub, other.note(new_id("note")))
    note = c.note(new_id("note"))

    def completed(output: str) -> dict[str, Any]:
        return c.task_resource(status="completed", owner=net.hub.role_ref, output=output)

    refused(await post(net.hub, transaction(completed(f"DocumentReference/{others_note['id']}"), note)), 409,
            "cw-output-note")
    assert not await visible(net.hub, f"DocumentReference/{note['id']}")
    r = await post(net.hub, transaction(completed(f"DocumentReference/{note['id']}"), note))
    assert r.status_code == 200, r.text
    assert await status_of(net.partner, f"Task/{c.task}") == "completed"
    assert await visible(net.partner, f"DocumentReference/{note['id']}")


async def test_a_transaction_of_communications_is_held_to_the_parties(net: Network) -> None:
    c = await advanced(await opened(net), "in-progress")
    question = c.communication(new_id("q"))
    refused(await post(net.third, transaction(c.communication(new_id("q"), sender=net.third.role_ref))), 403,
            "cw-comm-party")
    other = await advanced(await opened(net), "in-progress")
    elsewhere = await written(net.hub, other.communication(new_id("q")))
    refused(await post(net.partner, transaction(c.communication(new_id("a"), answer=True,
                                                                in_response_to=f"Communication/{elsewhere['id']}"))),
            409, "cw-comm-reply")
    # The question and the Task awaiting information in one transaction, the Task last.
    r = await post(net.hub, transaction(question, c.task_resource(status="in-progress", owner=net.hub.role_ref,
                                                                  business="awaiting-information")))
    assert r.status_code == 200, r.text


async def test_a_transaction_withdrawing_the_consent_cancels_the_consult(net: Network) -> None:
    c = await advanced(await opened(net), "accepted")
    r = await post(net.partner, transaction(c.consent_resource(status="inactive")))
    assert r.status_code == 200, r.text
    assert await status_of(net.partner, f"Task/{c.task}") == "cancelled"
    assert await status_of(net.partner, f"ServiceRequest/{c.request}") == "revoked"
    assert not await visible(net.hub, f"Patient/{c.patient}")


async def test_a_transaction_revokes_the_request_only_before_work_started(net: Network) -> None:
    c = await advanced(await opened(net), "in-progress")
    refused(await post(net.partner, transaction(c.request_resource(status="revoked"))), 409, "cw-request-revoke")
    c = await advanced(await opened(net), "received")
    r = await post(net.partner, transaction(c.request_resource(status="revoked")))
    assert r.status_code == 200, r.text
    assert await status_of(net.partner, f"Task/{c.task}") == "cancelled"


# -- messages -------------------------------------------------------------------------------------------


async def test_a_consult_request_message(net: Network) -> None:
    c = Consult(net.partner, net.hub)
    resources = request_resources(c)
    ok_message(await process(net.partner, message("consult-request", net.partner, net.hub, resources[2],
                                                  *resources)))
    assert await status_of(net.partner, f"Task/{c.task}") == "requested"
    assert await visible(net.hub, f"Patient/{c.patient}") and await visible(net.hub, f"ServiceRequest/{c.request}")


async def test_messages_moving_the_task_and_exchanging_questions_and_the_report(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await opened(net)
    accepted = c.task_resource(status="accepted", owner=hub.role_ref)
    ok_message(await process(hub, message("consult-status-update", hub, partner, accepted, accepted)))
    assert await status_of(partner, f"Task/{c.task}") == "accepted"
    started = c.task_resource(status="in-progress", owner=hub.role_ref, business="awaiting-information")
    ok_message(await process(hub, message("consult-status-update", hub, partner, started, started)))
    question = c.communication(new_id("q"))
    ok_message(await process(hub, message("consult-communication", hub, partner, question, question)))
    answer = c.communication(new_id("a"), answer=True, in_response_to=f"Communication/{question['id']}")
    ok_message(await process(partner, message("consult-communication", partner, hub, answer, answer)))
    note = c.note(new_id("note"))
    done = c.task_resource(status="completed", owner=hub.role_ref, output=f"DocumentReference/{note['id']}")
    ok_message(await process(hub, message("consult-report", hub, partner, done, done, note)))
    assert await status_of(partner, f"Task/{c.task}") == "completed"


async def test_messages_breaking_a_rule_of_the_write_are_answered_fatal_error(net: Network) -> None:
    hub, partner, third = net.hub, net.partner, net.third
    c = await opened(net)
    # Illegal: completed straight from requested (and the note it carries is not written either).
    note = c.note(new_id("note"))
    completed = c.task_resource(status="completed", owner=hub.role_ref, output=f"DocumentReference/{note['id']}")
    fatal(await process(hub, message("consult-status-update", hub, partner, completed, completed, note)),
          "cw-transition")
    assert not await visible(hub, f"DocumentReference/{note['id']}")
    # The requester does not accept its own request.
    accepted = c.task_resource(status="accepted")
    fatal(await process(partner, message("consult-status-update", partner, hub, accepted, accepted)),
          "cw-task-status-party")
    assert await status_of(partner, f"Task/{c.task}") == "requested"
    # A third institution does not write in the consult.
    intruder = c.communication(new_id("q"), sender=third.role_ref)
    fatal(await process(third, message("consult-communication", third, partner, intruder, intruder)),
          "cw-comm-party")
    # Cancelling after work started.
    await advanced(c, "in-progress")
    revoked = c.request_resource(status="revoked")
    fatal(await process(partner, message("consult-cancel", partner, hub, revoked, revoked)), "cw-request-revoke")
    assert await status_of(partner, f"ServiceRequest/{c.request}") == "active"
    # Before work started the cancel message revokes the request and cancels the Task.
    c = await advanced(await opened(net), "accepted")
    revoked = c.request_resource(status="revoked")
    ok_message(await process(partner, message("consult-cancel", partner, hub, revoked, revoked)))
    assert await status_of(partner, f"Task/{c.task}") == "cancelled"
    assert not await visible(hub, f"Patient/{c.patient}")


# Rules across the message's resources, checked when its unit of work is about to commit. Each case:
# (who sends, the message, the rule, what must not have been written / the Task status that must stand).
Case = tuple[Party, dict[str, Any], str, list[str], tuple[str, str] | None]


async def _consent_case(net: Network, **consent: Any) -> Case:
    c = Consult(net.partner, net.hub)
    resources = request_resources(c, **consent)
    rule = "cw-consent-purpose" if "purpose" in consent else "cw-consent-period"
    return (net.partner, message("consult-request", net.partner, net.hub, resources[2], *resources), rule,
            [f"Patient/{c.patient}", f"Consent/{c.consent}", f"ServiceRequest/{c.request}"], None)


async def _network_case(net: Network) -> Case:
    c = Consult(net.partner, net.third)
    resources = request_resources(c)
    return (net.partner, message("consult-request", net.partner, net.third, resources[2], *resources),
            "cw-network", [f"Patient/{c.patient}", f"ServiceRequest/{c.request}"], None)


async def _subject_case(net: Network) -> Case:
    c = await advanced(await opened(net), "in-progress")
    wrong = c.communication(new_id("q"), subject="someone-else")
    return (net.hub, message("consult-communication", net.hub, net.partner, wrong, wrong), "cw-comm-subject",
            [f"Communication/{wrong['id']}"], None)


async def _reply_case(net: Network) -> Case:
    c = await advanced(await opened(net), "in-progress")
    other = await advanced(await opened(net), "in-progress")
    elsewhere = await written(net.hub, other.communication(new_id("q")))
    answer = c.communication(new_id("a"), answer=True, in_response_to=f"Communication/{elsewhere['id']}")
    return (net.partner, message("consult-communication", net.partner, net.hub, answer, answer), "cw-comm-reply",
            [f"Communication/{answer['id']}"], None)


async def _note_case(net: Network) -> Case:
    c = await advanced(await opened(net), "in-progress")
    other = await advanced(await opened(net), "in-progress")
    others_note = await written(net.hub, other.note(new_id("note")))
    task = c.task_resource(status="completed", owner=net.hub.role_ref,
                           output=f"DocumentReference/{others_note['id']}")
    return (net.hub, message("consult-report", net.hub, net.partner, task, task, others_note), "cw-output-note", [],
            (f"Task/{c.task}", "in-progress"))


DEFERRED_CASES = {
    "consent-purpose": lambda net: _consent_case(net, purpose="HPAYMT"),
    "consent-period": lambda net: _consent_case(net, start="2020-01-01", end="2021-01-01"),
    "network": _network_case,
    "comm-subject": _subject_case,
    "comm-reply": _reply_case,
    "output-note": _note_case,
}


@pytest.mark.parametrize("case", sorted(DEFERRED_CASES))
async def test_a_message_breaking_a_rule_across_its_resources_changes_nothing(net: Network, case: str) -> None:
    sender, bundle, rule, absent, stands = await DEFERRED_CASES[case](net)
    r = await process(sender, bundle)
    assert r.status_code in (200, 409), r.text
    assert rule in rules(r), r.text
    for ref in absent:
        assert not await visible(net.partner, ref) and not await visible(net.hub, ref), ref
    if stands:
        assert await status_of(net.partner, stands[0]) == stands[1]


@pytest.mark.parametrize("case", sorted(DEFERRED_CASES))
async def test_a_message_breaking_a_rule_across_its_resources_is_answered_fatal_error(net: Network,
                                                                                      case: str) -> None:
    sender, bundle, rule, _, _ = await DEFERRED_CASES[case](net)
    fatal(await process(sender, bundle), rule)


async def test_a_task_rejected_by_message_ends_the_consultants_access(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await opened(net)
    rejected = c.task_resource(status="rejected", reason="not our department")
    ok_message(await process(hub, message("consult-status-update", hub, partner, rejected, rejected)))
    assert await status_of(partner, f"Task/{c.task}") == "rejected"
    assert not await visible(hub, f"Patient/{c.patient}")


async def test_a_report_by_message_is_readable_by_the_requester(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await advanced(await opened(net), "in-progress")
    note = c.note(new_id("note"))
    done = c.task_resource(status="completed", owner=hub.role_ref, output=f"DocumentReference/{note['id']}")
    ok_message(await process(hub, message("consult-report", hub, partner, done, done, note)))
    assert await visible(partner, f"DocumentReference/{note['id']}")


async def test_an_answer_by_message_is_readable_by_the_consultant(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await advanced(await opened(net), "in-progress")
    question = await written(hub, c.communication(new_id("q")))
    answer = c.communication(new_id("a"), answer=True, in_response_to=f"Communication/{question['id']}")
    ok_message(await process(partner, message("consult-communication", partner, hub, answer, answer)))
    assert await visible(hub, f"Communication/{answer['id']}")


async def test_a_task_started_by_message_stops_the_requester_revoking(net: Network) -> None:
    hub, partner = net.hub, net.partner
    c = await opened(net)
    for status in ("accepted", "in-progress"):
        task = c.task_resource(status=status, owner=hub.role_ref)
        ok_message(await process(hub, message("consult-status-update", hub, partner, task, task)))
    refused(await partner.http.put(f"/ServiceRequest/{c.request}", json=c.request_resource(status="revoked")), 409,
            "cw-request-revoke")
