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

The handlers live by concept: :mod:`~fhir_exchange.portal.patient_pages`,
:mod:`~fhir_exchange.portal.consult_pages`; :mod:`~fhir_exchange.portal.page` holds what they share.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.portal import i18n
from fhir_exchange.portal.accounts import SCOPES
from fhir_exchange.portal.consult_pages import ConsultPages
from fhir_exchange.portal.fhir import Fhir
from fhir_exchange.portal.page import (
    HERE,
    LOGIN_CSRF_COOKIE,
    MAX_FILES,
    PREFIX,
    SESSION_COOKIE,
    Handler,
    Page,
    Refused,
    local_path,
)
from fhir_exchange.portal.patient_pages import PatientPages
from fhir_exchange.portal.signins import authentication_event
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.audit import AuditTrail, audit_event
from fhir_exchange.security.users import User

log = logging.getLogger("fhir_exchange.portal")

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Portal(PatientPages, ConsultPages):
    """The portal's routes and the plumbing of every page view (session, CSRF, audit, headers)."""

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

    # -- signing in and out, language ----------------------------------------------------------

    async def not_found(self, page: Page) -> Response:
        raise Refused(404, "notfound.title", "notfound.text")

    async def home(self, page: Page) -> Response:
        return self.redirect(f"{PREFIX}/consults")

    async def login_form(self, page: Page, error: str = "", status: int = 200) -> Response:
        token = page.request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        page.cookies[LOGIN_CSRF_COOKIE] = token
        next_url = page.field("next") or page.request.query_params.get("next", "")
        return self.render(page, "login.html", status=status, login_csrf=token, error=error, next=local_path(next_url),
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
        response = self.redirect(local_path(page.field("next")) or f"{PREFIX}/consults")
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
        return self.redirect(local_path(page.request.query_params.get("next", "")) or f"{PREFIX}/consults")


class _SignIn(Exception):
    """Not signed in: the answer is the redirect to the login page."""

    def __init__(self, response: Response) -> None:
        super().__init__("sign in")
        self.response = response
