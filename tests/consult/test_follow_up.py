"""Follow-ups after discharge or transfer: a Task with code follow-up, partOf the first consult's Task,
with a due date; the request may be completed already; revoking waits for a started follow-up; the
sweep marks one past due overdue; a consult note is never deleted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.consult.scenario import (
    TASK_CODE,
    Consult,
    Network,
    advanced,
    opened,
    put,
    refused,
    written,
)

# The network's server runs its background tasks (the notifier among them) in the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def follow_up(c: Consult, id: str, *, part_of: str | None = None, due: str = "2099-01-01", **extra: Any
              ) -> dict[str, Any]:
    task = c.task_resource(id=id, **extra)
    task["code"] = {"coding": [{"system": TASK_CODE, "code": "follow-up"}]}
    task["partOf"] = [{"reference": part_of or f"Task/{c.task}"}]
    task["restriction"] = {"period": {"end": due}}
    return task


async def completed(net: Network) -> Consult:
    c = await advanced(await opened(net), "completed")
    sr = c.request_resource(status="completed")
    await written(c.requester, sr)
    return c


async def test_a_follow_up_may_follow_a_completed_consult(net: Network) -> None:
    c = await completed(net)
    r = await put(c.requester, follow_up(c, f"{c.task}-fu"))
    assert r.status_code == 201, r.text
    # The requester moves the due date; the consultant accepts and works on it.
    later = follow_up(c, f"{c.task}-fu", due="2099-02-01")
    assert (await put(c.requester, later)).status_code == 200
    for status in ("accepted", "in-progress"):
        moved = follow_up(c, f"{c.task}-fu", due="2099-02-01", status=status, owner=c.consultant.role_ref)
        assert (await put(c.consultant, moved)).status_code == 200


async def test_a_follow_up_is_part_of_the_first_consult_of_the_same_request(net: Network) -> None:
    c = await completed(net)
    other = await opened(net)
    for part_of in (f"Task/{other.task}", "Task/does-not-exist"):
        refused(await put(c.requester, follow_up(c, f"{c.task}-x", part_of=part_of)), 409, "cw-follow-up")


async def test_revoking_waits_for_a_started_follow_up(net: Network) -> None:
    c = await advanced(await opened(net), "completed")
    await written(c.requester, follow_up(c, f"{c.task}-fu"))
    for status in ("accepted", "in-progress"):
        await written(c.consultant, follow_up(c, f"{c.task}-fu", status=status, owner=c.consultant.role_ref))
    refused(await put(c.requester, c.request_resource(status="revoked")), 409, "cw-request-revoke")


async def test_the_sweep_marks_a_follow_up_past_due_overdue(net: Network) -> None:
    c = await completed(net)
    await written(c.requester, follow_up(c, f"{c.task}-late", due="2020-01-01"))
    assert await net.app.state.sweep.run() >= 1
    task = (await c.requester.http.get(f"/Task/{c.task}-late")).json()
    assert task["businessStatus"]["coding"][0]["code"] == "overdue"


async def test_a_consult_note_is_never_deleted(net: Network) -> None:
    c = await advanced(await opened(net), "completed")
    r = await c.consultant.http.delete(f"/DocumentReference/{c.request}-note")
    refused(r, 409, "cw-no-delete")
