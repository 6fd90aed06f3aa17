"""The consult pages: the worklist, requesting a consult, one consult and its actions, its files, the
network's dashboard."""

from __future__ import annotations

import base64
import binascii
from datetime import date
from urllib.parse import quote

from starlette.responses import Response

from fhir_exchange.consult import model
from fhir_exchange.errors import FhirError
from fhir_exchange.portal import actions, charts, consults, dashboard
from fhir_exchange.portal import resources as build
from fhir_exchange.portal.page import PREFIX, Page, Refused, Views

ACTIONS = ("accept", "reject", "assign", "ask", "answer", "note", "follow-up", "revoke", "close")


class ConsultPages(Views):
    """The consult handlers of :class:`~fhir_exchange.portal.web.Portal`."""

    # -- the worklist ----------------------------------------------------------------------------

    async def _rows(self, page: Page) -> tuple[list[consults.Row], list[consults.Row], dict[str, str]]:
        q = page.request.query_params
        filters = {k: q.get(k, "") for k in ("status", "priority", "department")}
        rows = await consults.worklist(page.client, page.me)
        incoming = [r for r in rows if r.side == "incoming"
                    and (not filters["status"] or filters["status"] in (r.status, "open" if r.is_open else ""))
                    and (not filters["priority"] or r.priority == filters["priority"])
                    and (not filters["department"] or r.department[0] == filters["department"])]
        outgoing = [r for r in rows if r.side == "outgoing"]
        return incoming, outgoing, filters

    async def worklist(self, page: Page) -> Response:
        incoming, outgoing, filters = await self._rows(page)
        return self.render(page, "worklist.html", incoming=incoming, outgoing=outgoing, filters=filters,
                           statuses=["open", *sorted(consults.OPEN), "completed", "rejected", "cancelled"],
                           priorities=build.PRIORITIES, departments=sorted(self.departments()),
                           rows_url=f"{PREFIX}/consults/rows?{page.request.url.query}")

    async def worklist_rows(self, page: Page) -> Response:
        incoming, _, _ = await self._rows(page)
        return self.render(page, "_rows.html", rows=incoming)
    # -- requesting a consult --------------------------------------------------------------------

    async def new_consult(self, page: Page, error: str = "", status: int = 200) -> Response:
        patient_id = page.field("patient") or page.request.query_params.get("patient", "")
        patient = await page.client.read(f"Patient/{patient_id}") if consults._plain_id(patient_id) else None
        if patient is None:
            raise Refused(404, "notfound.title", "notfound.text")
        hubs = await consults.hubs(page.client, page.me, self.departments())
        return self.render(page, "new_consult.html", status=status, patient=patient, name=consults.human_name(patient),
                           mrn=consults.mrn(patient), hubs=hubs, priorities=build.PRIORITIES, error=error,
                           form=page.form, all_departments=sorted({d for h in hubs for d in h[2]}))

    async def create_consult(self, page: Page) -> Response:
        patient_id = page.field("patient")
        hub, department = page.field("hub"), page.field("department")
        try:
            offered = {h[0]: h[2] for h in await consults.hubs(page.client, page.me, self.departments())}
            if hub not in offered:
                raise actions.ActionError("error.hub")
            if department not in offered[hub]:
                raise actions.ActionError("error.department")
            files = [await self.upload(f) for f in page.files("files")]
            request_id = await actions.create_consult(
                page.client, page.me, patient_id=patient_id, hub=hub, department=department,
                department_display=self.departments().get(department, department), priority=page.field("priority"),
                reason=page.field("reason"), reason_code=page.field("reason_code"), question=page.field("question"),
                files=files, now=self.now())
        except actions.ActionError as err:
            return await self.new_consult(page, page.t(err.key, **err.params), 422)
        except FhirError as err:
            if err.status >= 500:
                raise
            return await self.new_consult(page, page.t("error.refused", reason=err.diagnostics), err.status)
        return self.redirect(f"{PREFIX}/consults/{request_id}")

    # -- one consult -----------------------------------------------------------------------------

    async def load(self, page: Page) -> consults.Consult:
        consult = await consults.load_consult(page.client, page.me, page.request.path_params["id"],
                                              portal_base=PREFIX)
        if consult is None:
            raise Refused(404, "notfound.title", "notfound.text")
        return consult

    async def consult(self, page: Page, error: str = "", status: int = 200,
                      loaded: consults.Consult | None = None) -> Response:
        consult = loaded or await self.load(page)
        code, display = consults.department(consult.request)
        note = consult.latest_note
        note_text = ""
        if note is not None:
            attachment = next((c.get("attachment") for c in note.get("content") or []), None) or {}
            note_text = consults.text_of(attachment)
        return self.render(page, "consult.html", status=status, c=consult, error=error,
                           department_code=code, department_display=display, note=note, note_text=note_text,
                           recommendation=consults.recommendation(note), recommendations=build.RECOMMENDATIONS,
                           patient_name=consults.human_name(consult.patient), mrn=consults.mrn(consult.patient),
                           number=next((str(i.get("value")) for i in consult.request.get("identifier") or []), ""),
                           question=next((str(n.get("text")) for n in consult.request.get("note") or []), ""),
                           reason=", ".join(str(r.get("text") or "") for r in consult.request.get("reasonCode") or []),
                           reason_codes=[str(c.get("code")) for r in consult.request.get("reasonCode") or []
                                         for c in model.codings(r)],
                           due_date=consults.due_date, business=model.business_status, today=self.now()[:10],
                           summary=await self.summary(page.client, actions._patient_id(consult)))

    async def consult_action(self, page: Page) -> Response:
        action = page.request.path_params["action"]
        if action not in ACTIONS:
            raise Refused(404, "notfound.title", "notfound.text")
        consult = await self.load(page)
        me, fhir, now = page.me, page.client, self.now()
        task_id = page.field("task") or (str(consult.task["id"]) if consult.task else "")
        try:
            if action == "accept":
                await actions.accept(fhir, me, consult, task_id=task_id, assignee=page.field("assignee"), now=now)
            elif action == "reject":
                await actions.reject(fhir, me, consult, task_id=task_id, reason=page.field("reason"), now=now)
            elif action == "assign":
                await actions.assign(fhir, me, consult, task_id=task_id, assignee=page.field("assignee"), now=now)
            elif action == "ask":
                await actions.ask(fhir, me, consult, task_id=task_id, text=page.field("text"), now=now)
            elif action == "answer":
                await actions.answer(fhir, me, consult, question_id=page.field("question"), text=page.field("text"),
                                     now=now)
            elif action == "note":
                await actions.write_note(fhir, me, consult, task_id=task_id, text=page.field("text"),
                                         recommendation=page.field("recommendation"), signed=bool(page.field("sign")),
                                         language=page.lang, title=page.field("title") or page.t("consult.notes"),
                                         now=now)
            elif action == "follow-up":
                await actions.follow_up(fhir, me, consult, due=page.field("due"), note=page.field("note"), now=now)
            elif action == "revoke":
                await actions.revoke(fhir, me, consult)
            else:
                await actions.close(fhir, me, consult)
        except actions.ActionError as err:
            return await self.consult(page, page.t(err.key, **err.params), 422, consult)
        except FhirError as err:
            if err.status >= 500:
                raise
            page.client.cache.clear()
            return await self.consult(page, page.t("error.refused", reason=err.diagnostics), err.status)
        return self.redirect(f"{PREFIX}/consults/{consult.id}?done={quote(action)}#{quote(action)}")

    async def file(self, page: Page) -> Response:
        binary_id = page.request.path_params["id"]
        binary = await page.client.read(f"Binary/{binary_id}") if consults._plain_id(binary_id) else None
        if binary is None:
            raise Refused(404, "notfound.title", "notfound.text")
        try:
            data = base64.b64decode(binary.get("data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise Refused(404, "notfound.title", "notfound.text") from None
        kind = str(binary.get("contentType") or "")
        media = kind if kind in actions.ALLOWED else "application/octet-stream"
        # A sandbox: a crafted file opened from the portal runs no script with the portal's origin.
        return Response(data, media_type=media, headers={
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; object-src 'self'",
            "Content-Disposition": f'inline; filename="{binary_id}{_extension(media)}"'})

    # -- the dashboard ---------------------------------------------------------------------------

    async def dashboard(self, page: Page) -> Response:
        board = await dashboard.load(page.client, date.fromisoformat(self.now()[:10]))
        t = page.t
        per_week = charts.stacked_bars(t("dashboard.per-week"), board.weeks,
                                       [(p.label, p.per_week) for p in board.pairs])
        turnaround = charts.horizontal_bars(
            t("dashboard.turnaround"),
            [(p.label, [p.accept_median, p.accept_p90, p.note_median, p.note_p90]) for p in board.pairs],
            [f"{t(stage)} ({t(stat)})" for stage in ("dashboard.to-accept", "dashboard.to-note")
             for stat in ("dashboard.median", "dashboard.p90")])
        outcomes = charts.horizontal_bars(
            t("dashboard.recommendations"),
            [(t(f"rec.{code}"), [float(board.recommendations.get(code, 0))]) for code in build.RECOMMENDATIONS],
            [t("dashboard.recommendations")])
        follow = charts.horizontal_bars(
            t("dashboard.follow-ups"),
            [(p.label, [float(p.follow_ups_due), float(p.follow_ups_overdue)]) for p in board.pairs],
            [t("dashboard.due"), t("dashboard.overdue")])
        return self.render(page, "dashboard.html", board=board, weeks=dashboard.WEEKS,
                           recommendations=build.RECOMMENDATIONS, per_week=per_week, turnaround=turnaround,
                           outcomes=outcomes, follow=follow)


def _extension(media: str) -> str:
    return {actions.PDF: ".pdf", actions.PNG: ".png", actions.JPEG: ".jpg"}.get(media, "")
