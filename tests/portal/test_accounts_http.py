"""Accounts, sessions, CSRF, lockout, languages, audit and isolation of the portal over HTTP (Starlette's
TestClient on the real app, a real SQLite store, authentication on)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_exchange.portal import consults, i18n
from fhir_exchange.portal.fhir import Fhir
from fhir_exchange.portal.resources import PRIORITIES, RECOMMENDATIONS
from fhir_exchange.security.actor import SYSTEM
from fhir_exchange.security.users import Users
from tests.portal.conftest import csrf_of, sign_in
from tests.portal.network import PASSWORD, Seeded


def audit_events(client: TestClient, client_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of one portal user, read through the router as the system."""
    router = client.app.state.router  # type: ignore[attr-defined]

    async def go() -> list[dict[str, Any]]:
        found = await Fhir(router, SYSTEM, "http://testserver/fhir").search("AuditEvent", [])
        return [e for e in found.matches if any((a.get("who") or {}).get("identifier", {}).get("value") == client_id
                                                for a in e.get("agent") or [])]

    assert client.portal is not None
    return client.portal.call(go)


def test_pages_need_a_session(app_client: TestClient) -> None:
    app_client.cookies.clear()
    r = app_client.get("/portal/consults?status=open", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/portal/login?next=%2Fportal%2Fconsults%3Fstatus%3Dopen"
    assert app_client.get("/portal/dashboard", follow_redirects=False).status_code == 303
    assert app_client.post("/portal/patients", data={"name": "x"}, follow_redirects=False).status_code == 303


def test_session_cookie_is_httponly_samesite_and_secure_over_tls(app_client: TestClient) -> None:
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        app_client.cookies.clear()
        page = app_client.get(f"{base}/portal/login")
        r = app_client.post(f"{base}/portal/login", data={"csrf": csrf_of(page.text), "username": "kim.hub",
                                                          "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 303
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("fx_session="))
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Path=/portal" in cookie
        assert ("Secure" in cookie) is secure


def test_unknown_portal_addresses_get_the_portal_not_found_page(app_client: TestClient) -> None:
    r = app_client.get("/portal/no/such/page", headers={"accept-language": "en"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and "Not found" in r.text
    assert app_client.get("/portal/static/portal.css").headers["content-type"].startswith("text/css")


def test_responses_forbid_framing_scripts_and_caching(app_client: TestClient) -> None:
    r = sign_in(app_client, "kim.hub").get("/portal/consults")
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"


def test_every_form_needs_its_csrf_token(app_client: TestClient) -> None:
    c = sign_in(app_client, "park.partner")
    form = {"name": "CSRF 환자", "gender": "male", "birth_date": "1950-01-01"}
    assert c.post("/portal/patients", data=form, follow_redirects=False).status_code == 403
    assert c.post("/portal/patients", data={**form, "csrf": "forged"}, follow_redirects=False).status_code == 403
    assert c.post("/portal/logout", data={}, follow_redirects=False).status_code == 403
    token = csrf_of(c.get("/portal/patients").text)
    assert c.post("/portal/patients", data={**form, "csrf": token}, follow_redirects=False).status_code == 303
    # The login form: its token must match the one in its own cookie.
    c.cookies.clear()
    c.get("/portal/login")
    r = c.post("/portal/login", data={"csrf": "forged", "username": "park.partner", "password": PASSWORD},
               follow_redirects=False)
    assert r.status_code == 403


def test_wrong_and_unknown_users_get_the_same_answer(app_client: TestClient) -> None:
    app_client.cookies.clear()
    answers = []
    for username in ("nobody.here", "kim.hub"):
        page = app_client.get("/portal/login")
        r = app_client.post("/portal/login", data={"csrf": csrf_of(page.text), "username": username,
                                                   "password": "wrong password"}, headers={"accept-language": "en"})
        answers.append((r.status_code, "The username or password is wrong." in r.text))
    assert answers == [(401, True), (401, True)]
    users = Users(app_client.app.state.services.store)  # type: ignore[attr-defined]
    assert app_client.portal is not None
    app_client.portal.call(users.unlock, "kim.hub", "2026-01-01T00:00:00Z")


def test_lockout_after_repeated_failures_and_unlock(app_client: TestClient) -> None:
    def attempt(password: str) -> Any:
        page = app_client.get("/portal/login")
        return app_client.post("/portal/login", data={"csrf": csrf_of(page.text), "username": "lee.hub",
                                                      "password": password}, follow_redirects=False,
                               headers={"accept-language": "en"})

    app_client.cookies.clear()
    assert [attempt("wrong").status_code for _ in range(2)] == [401, 401]
    third = attempt("wrong")
    assert third.status_code == 403 and "the account is locked until" in third.text
    locked = attempt(PASSWORD)  # even the right password, while locked
    assert locked.status_code == 403
    users = Users(app_client.app.state.services.store)  # type: ignore[attr-defined]
    assert app_client.portal is not None
    app_client.portal.call(users.unlock, "lee.hub", "2026-01-01T00:00:00Z")
    assert attempt(PASSWORD).status_code == 303


def test_sign_ins_and_outs_are_audited(app_client: TestClient, net: Seeded) -> None:
    app_client.cookies.clear()
    page = app_client.get("/portal/login")
    app_client.post("/portal/login", data={"csrf": csrf_of(page.text), "username": "park.partner",
                                           "password": "not the password"})
    c = sign_in(app_client, "park.partner")
    c.post("/portal/logout", data={"csrf": csrf_of(c.get("/portal/consults").text)})
    events = [e for e in audit_events(app_client, "portal:park.partner") if e["type"]["code"] == "110114"]
    seen = [(e["subtype"][0]["code"], e["outcome"]) for e in sorted(events, key=lambda e: e["recorded"])]
    assert ("110122", "4") in seen and ("110122", "0") in seen and ("110123", "0") in seen
    refused = next(e for e in events if e["outcome"] == "4")
    assert refused["outcomeDesc"] == "Login refused: wrong"
    assert {"reference": f"Organization/{net.partner}"} in [a["who"] for a in refused["agent"]]


def test_logout_ends_the_session(app_client: TestClient) -> None:
    c = sign_in(app_client, "kim.hub")
    token = c.cookies.get("fx_session")
    r = c.post("/portal/logout", data={"csrf": csrf_of(c.get("/portal/consults").text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal/login?out=1"
    c.cookies.clear()
    c.cookies.set("fx_session", str(token), path="/portal")
    assert c.get("/portal/consults", follow_redirects=False).status_code == 303  # the old cookie is dead


def test_a_disabled_account_loses_its_session(app_client: TestClient) -> None:
    c = sign_in(app_client, "lee.hub")
    assert c.get("/portal/consults", follow_redirects=False).status_code == 200
    users = Users(app_client.app.state.services.store)  # type: ignore[attr-defined]
    assert app_client.portal is not None
    app_client.portal.call(users.set_disabled, "lee.hub", True, "2026-01-01T00:00:00Z")
    try:
        assert c.get("/portal/consults", follow_redirects=False).status_code == 303
    finally:
        app_client.portal.call(users.set_disabled, "lee.hub", False, "2026-01-01T00:00:00Z")


def test_login_redirects_only_within_the_portal(app_client: TestClient) -> None:
    app_client.cookies.clear()
    for target, expected in (("https://evil.example/x", "/portal/consults"), ("//evil.example", "/portal/consults"),
                             ("/portal/patients", "/portal/patients")):
        page = app_client.get(f"/portal/login?next={target}")
        r = app_client.post("/portal/login", data={"csrf": csrf_of(page.text), "username": "kim.hub",
                                                   "password": PASSWORD, "next": target}, follow_redirects=False)
        assert r.headers["location"] == expected


@pytest.mark.parametrize(("header", "lang"), [("en-US,en;q=0.9", "en"), ("ko-KR", "ko"), ("", "ko"),
                                              ("en;q=0.5, ko;q=0.9", "ko"), ("fr-FR, en;q=0.8", "en"),
                                              ("ko;q=0", "ko"), ("de", "ko")])
def test_language_from_the_browser(header: str, lang: str) -> None:
    assert i18n.choose(None, header) == lang


def test_language_switch_is_remembered(app_client: TestClient) -> None:
    app_client.cookies.clear()
    page = app_client.get("/portal/login", headers={"accept-language": "en"})
    assert '<html lang="en">' in page.text and "Sign in" in page.text
    r = app_client.get("/portal/language/ko?next=/portal/login", headers={"accept-language": "en"},
                       follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal/login"
    assert "fx_lang=ko" in r.headers["set-cookie"]
    page = app_client.get("/portal/login", headers={"accept-language": "en"})
    assert '<html lang="ko">' in page.text and "로그인" in page.text


def test_every_message_is_translated() -> None:
    assert set(i18n.EN) == set(i18n.KO)
    here = Path(i18n.__file__).parent
    used: set[str] = set()
    for source in here.glob("templates/*.html"):
        used.update(re.findall(r"""\bt\('([a-z0-9-]+\.[a-z0-9-]+)'""", source.read_text()))
    for source in here.glob("*.py"):
        text = source.read_text()
        used.update(re.findall(r'ActionError\("([a-z0-9-]+\.[a-z0-9-]+)"', text))
        used.update(re.findall(r'page\.t\("([a-z0-9-]+\.[a-z0-9-]+)"', text))
    assert len(used) > 100
    assert used - set(i18n.EN) == set()
    for prefix, codes in (("status.", consults.OPEN), ("rec.", RECOMMENDATIONS), ("priority.", PRIORITIES)):
        assert {f"{prefix}{c}" for c in codes} <= set(i18n.EN)


def test_page_views_are_audited_as_the_user(app_client: TestClient, net: Seeded) -> None:
    c = sign_in(app_client, "park.partner")
    token = csrf_of(c.get("/portal/patients").text)
    r = c.post("/portal/patients", data={"csrf": token, "name": "감사 환자", "gender": "female",
                                         "birth_date": "1940-05-05"}, follow_redirects=False)
    patient = r.headers["location"].rsplit("/", 1)[1]
    assert c.get(f"/portal/patients/{patient}").status_code == 200
    events = audit_events(app_client, "portal:park.partner")
    views = [e for e in events if any(en.get("what", {}).get("reference") == f"Patient/{patient}"
                                      for en in e.get("entity") or [])]
    assert len(views) >= 2  # the write and the page view
    agents = {(a.get("who") or {}).get("reference") for e in views for a in e.get("agent") or []}
    assert f"Organization/{net.partner}" in agents
    assert f"PractitionerRole/{net.users['park.partner']}" in agents
    assert {e["action"] for e in views} >= {"R"}  # the page view is a read
    assert all(e["outcome"] == "0" for e in views)
    # A search page is audited with its query, as an API search is.
    assert c.get("/portal/patients?q=%EA%B0%90%EC%82%AC").status_code == 200
    queries = [base64.b64decode(en["query"]).decode() for e in audit_events(app_client, "portal:park.partner")
               for en in e.get("entity") or [] if "query" in en]
    assert any(q.startswith("GET /portal/patients?q=") for q in queries)


def test_another_institution_sees_neither_patients_nor_files(app_client: TestClient, net: Seeded) -> None:
    c = sign_in(app_client, "park.partner")
    token = csrf_of(c.get("/portal/patients").text)
    r = c.post("/portal/patients", data={"csrf": token, "name": "격리 환자", "mrn": "ISO-1", "gender": "male",
                                         "birth_date": "1939-01-01"}, follow_redirects=False)
    patient_url = r.headers["location"]
    pdf = b"%PDF-1.4\n%%EOF\n"
    r = c.post(f"{patient_url}/consents", data={"csrf": token, "recipient": net.hub, "start": "2026-01-01",
                                                "end": "2099-01-01"},
               files=[("form", ("c.pdf", pdf, "application/pdf"))],
               follow_redirects=False)
    assert r.status_code == 303
    file_link = re.search(r'href="(/portal/files/Binary/[^"]+)"', c.get(patient_url).text)
    assert file_link and c.get(file_link.group(1)).content == pdf
    o = sign_in(app_client, "choi.other")
    assert o.get(patient_url).status_code == 404
    assert "격리 환자" not in o.get("/portal/patients?q=ISO-1").text
    assert o.get(file_link.group(1)).status_code == 404


def test_uploads_must_be_pdf_or_images_within_the_limit(app_client: TestClient, net: Seeded) -> None:
    c = sign_in(app_client, "park.partner")
    token = csrf_of(c.get("/portal/patients").text)
    r = c.post("/portal/patients", data={"csrf": token, "name": "파일 환자", "gender": "female",
                                         "birth_date": "1945-01-01"}, follow_redirects=False)
    patient_url = r.headers["location"]
    form = {"csrf": token, "recipient": net.hub, "start": "2026-01-01", "end": "2099-01-01"}
    fake = c.post(f"{patient_url}/consents", data=form, headers={"accept-language": "en"},
                  files=[("form", ("consent.pdf", b"<html>not a pdf</html>", "application/pdf"))])
    assert fake.status_code == 422 and "is not a PDF, PNG or JPEG" in fake.text
    big = b"%PDF-1.4\n" + b"0" * (10 * 1024 * 1024)
    large = c.post(f"{patient_url}/consents", data=form, headers={"accept-language": "en"},
                   files=[("form", ("consent.pdf", big, "application/pdf"))])
    assert large.status_code == 422 and "larger than 10 MB" in large.text
    missing = c.post(f"{patient_url}/consents", data=form, headers={"accept-language": "en"})
    assert missing.status_code == 422 and "Attach the signed consent form." in missing.text
    ok = c.post(f"{patient_url}/consents", data=form, follow_redirects=False,
                files=[("form", ("consent.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 32, "image/jpeg"))])
    assert ok.status_code == 303
    page = c.get(patient_url).text
    link = re.search(r'href="(/portal/files/Binary/[^"]+)"', page)
    assert link
    served = c.get(link.group(1))
    assert served.headers["content-type"] == "image/jpeg"
    assert served.content.startswith(b"\xff\xd8\xff")
    assert "sandbox" in served.headers["content-security-policy"]
