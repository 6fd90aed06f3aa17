"""The portal's HTTP edge: server-rendered pages under ``/portal`` (Jinja2, a little plain JavaScript),
served by the same process as the FHIR API.

Every page view runs as the signed-in user: a :class:`~fhir_exchange.portal.fhir.Fhir` client with
the user's :class:`Actor` (institution, PractitionerRole, the ``portal:<username>`` client, the scopes
of a portal user) dispatches each read, search and write through :meth:`Router.dispatch`, and the page
view is audited like an API request (one AuditEvent from the view's trail, written before the page
leaves, failing closed), so isolation, consent-based grants, the workflow's rules and the audit apply
as to any client. The portal never touches the store for FHIR data; only its own accounts and
sessions are store records (:mod:`fhir_exchange.security.users`).

Sessions are a random token in an HttpOnly, SameSite=Lax cookie (``Secure`` when the page was served
over TLS); every form carries the session's CSRF token (the login form a token in its own cookie) and a
POST without the right one is a 403. Responses forbid framing, caching and inline scripts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from fhir_exchange.clock import instant
from fhir_exchange.consult import model
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.router import Router
from fhir_exchange.portal import actions, charts, consults, dashboard, i18n
from fhir_exchange.portal import resources as build
from fhir_exchange.portal.accounts import SCOPES, departments
from fhir_exchange.portal.fhir import Fhir
from fhir_exchange.portal.signins import authentication_event
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.audit import AuditSink, AuditTrail, audit_event
from fhir_exchange.security.users import Session, User, Users
from fhir_exchange.settings import Settings

log = logging.getLogger("fhir_exchange.portal")

PREFIX = "/portal"
SESSION_COOKIE = "fx_session"
LOGIN_CSRF_COOKIE = "fx_login_csrf"
HERE = Path(__file__).resolve().parent
MAX_FILES = 10
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# What the consent form's "withhold documents" box excepts. Binary too: the consult's grants follow a
# DocumentReference's Binary url, and a deny of DocumentReference alone leaves that Binary granted.
WITHHELD = ("DocumentReference", "Binary")
ACTIONS = ("accept", "reject", "assign", "ask", "answer", "note", "follow-up", "revoke", "close")


@dataclass(slots=True)
class Page:
    """One page view: who, in which language, and the FHIR client it reads and writes with."""

    request: Request
    lang: str
    user: User | None = None
    session: Session | None = None
    fhir: Fhir | None = None
    form: FormData | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def me(self) -> consults.Me:
        assert self.user is not None
        return consults.Me(self.user.username, self.user.institution, self.user.practitioner_role, self.user.display)

    @property
    def client(self) -> Fhir:
        assert self.fhir is not None
        return self.fhir

    def t(self, key: str, **params: Any) -> str:
        return i18n.translate(self.lang, key, **params)

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else default

    def files(self, name: str) -> list[UploadFile]:
        if self.form is None:
            return []
        return [f for f in self.form.getlist(name) if isinstance(f, UploadFile) and f.filename]


class Refused(Exception):
    """A page answered with an error page (not found, forbidden)."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status, self.title, self.text = status, title, text


Handler = Callable[[Page], Awaitable[Response]]


class Portal:
    def __init__(self, router: Router, settings: Settings, users: Users, audit: AuditSink | None) -> None:
        self.router = router
        self.settings = settings
        self.users = users
        self.audit = audit
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(),
                               trim_blocks=True, lstrip_blocks=True)
        self._departments: dict[str, str] | None = None
        self.env.filters["local"] = local_time

    # -- plumbing --------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        p = PREFIX
        return [
            Route(f"{p}", self.view(self.home, auth=False), methods=["GET"]),
            Route(f"{p}/", self.view(self.home, auth=False), methods=["GET"]),
            Route(f"{p}/login", self.view(self.login_form, auth=False), methods=["GET"]),
            Route(f"{p}/login", self.view(self.login, auth=False), methods=["POST"]),
            Route(f"{p}/logout", self.view(self.logout), methods=["POST"]),
            Route(f"{p}/language/{{lang}}", self.view(self.language, auth=False), methods=["GET"]),
            Route(f"{p}/consults", self.view(self.worklist), methods=["GET"]),
            Route(f"{p}/consults", self.view(self.create_consult), methods=["POST"]),
            Route(f"{p}/consults/rows", self.view(self.worklist_rows), methods=["GET"]),
            Route(f"{p}/consults/new", self.view(self.new_consult), methods=["GET"]),
            Route(f"{p}/consults/{{id}}", self.view(self.consult), methods=["GET"]),
            Route(f"{p}/consults/{{id}}/{{action}}", self.view(self.consult_action), methods=["POST"]),
            Route(f"{p}/patients", self.view(self.patients), methods=["GET"]),
            Route(f"{p}/patients", self.view(self.register_patient), methods=["POST"]),
            Route(f"{p}/patients/{{id}}", self.view(self.patient), methods=["GET"]),
            Route(f"{p}/patients/{{id}}/consents", self.view(self.record_consent), methods=["POST"]),
            Route(f"{p}/consents/{{id}}/withdraw", self.view(self.withdraw_consent), methods=["POST"]),
            Route(f"{p}/files/Binary/{{id}}", self.view(self.file), methods=["GET"]),
            Route(f"{p}/dashboard", self.view(self.dashboard), methods=["GET"]),
            Mount(f"{p}/static", app=StaticFiles(directory=HERE / "static"), name="portal-static"),
            # Last: any other portal address is the portal's own "Not found" page, not the API's OperationOutcome.
            Route(f"{p}/{{rest:path}}", self.view(self.not_found, auth=False),
                  methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    def now(self) -> str:
        return instant(self.router.services.clock.now())

    def fhir_base(self, request: Request) -> str:
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{self.settings.base_path}"

    def view(self, handler: Handler, *, auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            page = Page(request, i18n.choose(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")))
            trail = AuditTrail()
            actor: Actor | None = None
            diagnostics = ""
            try:
                if auth:
                    await self.authenticate(page)  # before reading a body: no uploads from strangers
                    assert page.user is not None
                    actor = Actor(institution=page.user.institution, client_id=f"portal:{page.user.username}",
                                  scopes=SCOPES, practitioner=f"PractitionerRole/{page.user.practitioner_role}")
                    page.fhir = Fhir(self.router, actor, self.fhir_base(request), trail)
                if request.method == "POST":
                    page.form = await self.read_form(request)
                    expected = page.session.csrf if page.session else ""
                    if auth and not self.csrf_ok(page.field("csrf"), expected):
                        raise Refused(403, "csrf.title", "csrf.text")
                response = await handler(page)
            except _SignIn as go:
                return self.finish(page, go.response)
            except Refused as err:
                response = self.render(page, "error.html", status=err.status, title=page.t(err.title),
                                       text=page.t(err.text))
                diagnostics = err.title
            except FhirError as err:
                status = err.status if 400 <= err.status < 600 else 500
                key = "notfound.title" if status in (404, 410) else "refused.title"
                response = self.render(page, "error.html", status=status, title=page.t(key), text=err.diagnostics)
                diagnostics = err.diagnostics
            except Exception:  # never a stack trace to the browser
                log.exception("Unhandled error on %s %s", request.method, request.url.path)
                response = self.render(page, "error.html", status=500, title="500", text="Internal server error")
                diagnostics = "Internal server error"
            if actor is not None and self.audit is not None:
                try:
                    event = audit_event(actor=actor, trail=trail, method=request.method, path=request.url.path,
                                        query=request.url.query, status=response.status_code,
                                        diagnostics=diagnostics,
                                        address=request.client.host if request.client else None,
                                        recorded=self.now(), server=self.fhir_base(request))
                    await self.audit.record(event, actor.institution, frozenset(trail.owners))
                except Exception:  # fail closed, as the API does
                    log.exception("The audit record of %s %s could not be written", request.method, request.url.path)
                    response = self.render(page, "error.html", status=503, title="503",
                                           text="The audit record could not be written")
            return self.finish(page, response)

        return endpoint

    def finish(self, page: Page, response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        for name, value in page.cookies.items():
            self.set_cookie(page.request, response, name, value)
        return response

    def set_cookie(self, request: Request, response: Response, name: str, value: str,
                   max_age: int | None = None) -> None:
        secure = request.url.scheme == "https"
        if name == i18n.COOKIE:
            response.set_cookie(name, value, max_age=365 * 86400, path=PREFIX, secure=secure, samesite="lax")
        elif value:
            response.set_cookie(name, value, max_age=max_age, path=PREFIX, secure=secure, httponly=True,
                                samesite="lax")
        else:
            response.delete_cookie(name, path=PREFIX, secure=secure, httponly=True, samesite="lax")

    async def read_form(self, request: Request) -> FormData:
        limit = self.settings.portal_max_upload_bytes * MAX_FILES + 1024 * 1024
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise Refused(413, "refused.title", "error.body-too-large")
        try:
            return await request.form(max_files=MAX_FILES, max_fields=200)
        except Exception:  # a malformed multipart body
            raise Refused(400, "refused.title", "error.bad-form") from None

    async def authenticate(self, page: Page) -> None:
        now = self.now()
        token = page.request.cookies.get(SESSION_COOKIE, "")
        session = await self.users.session(token, now) if token else None
        user = await self.users.get(session.username, now) if session else None
        if session is None or user is None or user.disabled:
            target = page.request.url.path + (f"?{page.request.url.query}" if page.request.url.query else "")
            raise _SignIn(RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", status_code=303))
        page.session, page.user = session, user

    @staticmethod
    def csrf_ok(sent: str, expected: str) -> bool:
        return bool(sent) and bool(expected) and secrets.compare_digest(sent.encode(), expected.encode())

    def render(self, page: Page, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        url = page.request.url

        def department_name(code: str, korean: str = "") -> str:
            return i18n.department_name(page.lang, code, korean or self.departments().get(code, ""))

        html = self.env.get_template(template).render(
            t=page.t, lang=page.lang, user=page.user, csrf=page.session.csrf if page.session else "",
            prefix=PREFIX, path=url.path + (f"?{url.query}" if url.query else ""), department_name=department_name,
            poll_seconds=self.settings.portal_poll_seconds,
            max_mb=self.settings.portal_max_upload_bytes // (1024 * 1024), **context)
        return HTMLResponse(html, status_code=status)

    def departments(self) -> dict[str, str]:
        if self._departments is None:
            self._departments = departments(self.router)
        return self._departments

    @staticmethod
    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    # -- signing in and out, language ----------------------------------------------------------

    async def not_found(self, page: Page) -> Response:
        raise Refused(404, "notfound.title", "notfound.text")

    async def home(self, page: Page) -> Response:
        return self.redirect(f"{PREFIX}/consults")

    async def login_form(self, page: Page, error: str = "", status: int = 200) -> Response:
        token = page.request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        page.cookies[LOGIN_CSRF_COOKIE] = token
        next_url = page.field("next") or page.request.query_params.get("next", "")
        return self.render(page, "login.html", status=status, login_csrf=token, error=error, next=_local(next_url),
                           username=page.field("username"), signed_out="out" in page.request.query_params)

    async def login(self, page: Page) -> Response:
        if not self.csrf_ok(page.field("csrf"), page.request.cookies.get(LOGIN_CSRF_COOKIE, "")):
            raise Refused(403, "csrf.title", "csrf.text")
        at = self.router.services.clock.now()
        username = page.field("username").strip().lower()
        result = await self.users.sign_in(username, page.field("password"), at,
                                          max_failures=self.settings.portal_lockout_failures,
                                          lock_seconds=self.settings.portal_lockout_seconds)
        known = result.user or await self.users.get(username, instant(at))
        await self.audit_signin(page, username, known, login=True, reason=result.reason)
        if result.user is None:
            message = {"locked": page.t("login.locked", until=(result.locked_until or "")[:16].replace("T", " ")),
                       "disabled": page.t("login.disabled")}.get(result.reason, page.t("login.failed"))
            return await self.login_form(page, message, 403 if result.reason == "locked" else 401)
        session = await self.users.open_session(result.user, at, self.settings.portal_session_seconds)
        response = self.redirect(_local(page.field("next")) or f"{PREFIX}/consults")
        self.set_cookie(page.request, response, SESSION_COOKIE, session.token, self.settings.portal_session_seconds)
        page.cookies[LOGIN_CSRF_COOKIE] = ""
        return response

    async def logout(self, page: Page) -> Response:
        assert page.session is not None
        await self.users.close_session(page.session.token)
        await self.audit_signin(page, page.session.username, page.user, login=False, reason="")
        page.cookies[SESSION_COOKIE] = ""
        return self.redirect(f"{PREFIX}/login?out=1")

    async def audit_signin(self, page: Page, username: str, user: User | None, *, login: bool, reason: str) -> None:
        if self.audit is None:
            return
        request = page.request
        event = authentication_event(username=username, user=user, login=login, reason=reason,
                                     address=request.client.host if request.client else None, recorded=self.now(),
                                     server=self.fhir_base(request))
        await self.audit.record(event, user.institution if user else None, frozenset())

    async def language(self, page: Page) -> Response:
        lang = page.request.path_params["lang"]
        if lang in i18n.LANGUAGES:
            page.cookies[i18n.COOKIE] = lang
        return self.redirect(_local(page.request.query_params.get("next", "")) or f"{PREFIX}/consults")

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

    # -- patients and consents -------------------------------------------------------------------

    async def patients(self, page: Page, error: str = "", status: int = 200) -> Response:
        query = page.request.query_params.get("q", "").strip()[:100]
        found: dict[str, dict[str, Any]] = {}
        if query:
            for param in ("name", "identifier"):
                for p in (await page.client.search("Patient", [(param, query)], limit=50)).matches:
                    found.setdefault(str(p["id"]), p)
        else:
            for p in (await page.client.search("Patient", [("_sort", "-_lastUpdated")], limit=50)).matches:
                found.setdefault(str(p["id"]), p)
        return self.render(page, "patients.html", status=status, query=query, patients=list(found.values()),
                           error=error, genders=build.GENDERS, form=page.form, mrn=consults.mrn,
                           name=consults.human_name)

    async def register_patient(self, page: Page) -> Response:
        try:
            patient_id = await actions.register_patient(page.client, page.me, name=page.field("name"),
                                                        mrn=page.field("mrn"), gender=page.field("gender"),
                                                        birth_date=page.field("birth_date"))
        except actions.ActionError as err:
            return await self.patients(page, page.t(err.key, **err.params), 422)
        except FhirError as err:
            if err.status >= 500:
                raise
            return await self.patients(page, page.t("error.refused", reason=err.diagnostics), err.status)
        return self.redirect(f"{PREFIX}/patients/{patient_id}")

    async def patient(self, page: Page, error: str = "", status: int = 200) -> Response:
        patient_id = page.request.path_params["id"]
        patient = await page.client.read(f"Patient/{patient_id}") if consults._plain_id(patient_id) else None
        if patient is None:
            raise Refused(404, "notfound.title", "notfound.text")
        today = self.now()[:10]
        consents = (await page.client.search("Consent", [("patient", f"Patient/{patient_id}")])).matches
        requests = (await page.client.search("ServiceRequest", [("subject", f"Patient/{patient_id}"),
                                                                ("_sort", "-authored")], limit=100)).matches
        hubs = await consults.hubs(page.client, page.me, self.departments())
        directory = consults.Directory(page.client)
        recipients = {c["id"]: [await directory.name(r) for r in model.consent_recipients(c)] for c in consents}
        summary = await self.summary(page.client, patient_id)
        return self.render(page, "patient.html", status=status, patient=patient, mrn=consults.mrn(patient),
                           name=consults.human_name(patient), consents=consents, recipients=recipients,
                           state=lambda c: consults.consent_state(c, today), requests=requests, hubs=hubs,
                           summary=summary, error=error, today=today, department=consults.department,
                           own=_owned_by(patient, page.me.institution))

    async def summary(self, fhir: Fhir, patient_id: str) -> list[tuple[str, str]]:
        """The patient's conditions, allergies and recent observations the user may see (own records, or
        what a consent grants the consultant)."""
        out: list[tuple[str, str]] = []
        for type in ("Condition", "AllergyIntolerance", "MedicationStatement", "Observation"):
            for r in (await fhir.search(type, [("patient", f"Patient/{patient_id}")], limit=20)).matches:
                concept = r.get("code") or r.get("medicationCodeableConcept") or {}
                text = concept.get("text") or next((c.get("display") or c.get("code") for c in model.codings(concept)),
                                                   None) or type
                value = r.get("valueQuantity")
                if isinstance(value, dict):
                    text = f"{text}: {value.get('value')} {value.get('unit') or ''}".strip()
                out.append((type, str(text)))
        return out

    async def record_consent(self, page: Page) -> Response:
        patient_id = page.request.path_params["id"]
        uploads = page.files("form")
        try:
            form = await self.upload(uploads[0]) if uploads else None
            await actions.record_consent(page.client, page.me, patient_id=patient_id,
                                         recipient=page.field("recipient"), start=page.field("start"),
                                         end=page.field("end"), signed=page.field("signed"), form=form,
                                         now=self.now(), policy=build.namespace(page.me.institution, "consent-policy"),
                                         withhold=WITHHELD if page.field("withhold_documents") else ())
        except actions.ActionError as err:
            return await self.patient(page, page.t(err.key, **err.params), 422)
        return self.redirect(f"{PREFIX}/patients/{patient_id}")

    async def withdraw_consent(self, page: Page) -> Response:
        consent_id = page.request.path_params["id"]
        try:
            await actions.withdraw_consent(page.client, page.me, consent_id)
        except actions.ActionError:
            raise Refused(404, "notfound.title", "notfound.text") from None
        consent = await page.client.read(f"Consent/{consent_id}")
        patient = model.reference((consent or {}).get("patient")) or ""
        return self.redirect(f"{PREFIX}/patients/{patient.split('/', 1)[-1]}")

    async def upload(self, file: UploadFile) -> actions.Upload:
        limit = self.settings.portal_max_upload_bytes
        data = await file.read(limit + 1)
        return actions.upload(file.filename or "file", data, limit)

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


class _SignIn(Exception):
    """Not signed in: the answer is the redirect to the login page."""

    def __init__(self, response: Response) -> None:
        super().__init__("sign in")
        self.response = response


def _local(url: str) -> str:
    """A redirect target only within the portal (no open redirect to another site)."""
    return url if url.startswith(f"{PREFIX}/") and not url.startswith("//") and "\\" not in url else ""


def _owned_by(patient: dict[str, Any], institution: str) -> bool:
    for ident in patient.get("identifier") or []:
        if str(ident.get("system") or "").startswith(f"urn:fhir-exchange:portal:{institution}:"):
            return True
    return model.reference(patient.get("managingOrganization")) == f"Organization/{institution}"


def _extension(media: str) -> str:
    return {actions.PDF: ".pdf", actions.PNG: ".png", actions.JPEG: ".jpg"}.get(media, "")


KST = timezone(timedelta(hours=9))  # Korea keeps no daylight saving time


def local_time(value: str | None) -> str:
    """An instant as the portal's people read it: Korean time, to the minute (a date stays a date)."""
    text = str(value or "")
    if len(text) <= 10:
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text[:16].replace("T", " ")
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(KST).strftime("%Y-%m-%d %H:%M")
