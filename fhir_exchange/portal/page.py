"""What every portal page shares: the page view (:class:`Page`), the error page (:class:`Refused`), and
:class:`Views`, the base of the page handlers (templates, the clock, departments, uploads, the patient
summary). The routes and the request plumbing are in :mod:`fhir_exchange.portal.web`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhir_exchange.clock import instant
from fhir_exchange.consult import model
from fhir_exchange.interactions.router import Router
from fhir_exchange.portal import actions, consults, i18n
from fhir_exchange.portal.accounts import departments
from fhir_exchange.portal.fhir import Fhir
from fhir_exchange.security.audit import AuditSink
from fhir_exchange.security.users import Session, User, Users
from fhir_exchange.settings import Settings

PREFIX = "/portal"
SESSION_COOKIE = "fx_session"
LOGIN_CSRF_COOKIE = "fx_login_csrf"
HERE = Path(__file__).resolve().parent
MAX_FILES = 10
# What the consent form's "withhold documents" box excepts. Binary too: the consult's grants follow a
# DocumentReference's Binary url, and a deny of DocumentReference alone leaves that Binary granted.
WITHHELD = ("DocumentReference", "Binary")


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


class Views:
    """The base of the portal's page handlers: what a handler uses besides its :class:`Page`."""

    def __init__(self, router: Router, settings: Settings, users: Users, audit: AuditSink | None) -> None:
        self.router = router
        self.settings = settings
        self.users = users
        self.audit = audit
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(),
                               trim_blocks=True, lstrip_blocks=True)
        self._departments: dict[str, str] | None = None
        self.env.filters["local"] = local_time


    def now(self) -> str:
        return instant(self.router.services.clock.now())

    def fhir_base(self, request: Request) -> str:
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{self.settings.base_path}"

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

    async def upload(self, file: UploadFile) -> actions.Upload:
        limit = self.settings.portal_max_upload_bytes
        data = await file.read(limit + 1)
        return actions.upload(file.filename or "file", data, limit)


def local_path(url: str) -> str:
    """A redirect target only within the portal (no open redirect to another site)."""
    return url if url.startswith(f"{PREFIX}/") and not url.startswith("//") and "\\" not in url else ""



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
