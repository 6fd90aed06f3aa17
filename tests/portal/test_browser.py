"""A whole consult in a real browser: headless Chromium (Debian's, driven by Playwright for Python)
against a real ``fhir-exchange serve`` process with authentication on, two people at two institutions
doing their parts, and a third institution's user who finds nothing of it. Screenshots of every step
are kept in tests/portal/artifacts/ (gitignored; CI keeps them as artifacts)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhir_exchange.definitions import Definitions
from tests.e2e.conftest import cli_env, free_port
from tests.portal.network import PASSWORD, Seeded, seed_now

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00"
       b"\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")

playwright = pytest.importorskip("playwright.sync_api")

if not Path(CHROMIUM).exists():
    if os.environ.get("FHIR_EXCHANGE_REQUIRE_BROWSER"):
        raise RuntimeError(f"{CHROMIUM} is missing (CI installs Debian's chromium in .ci/run)")
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


class Site:
    def __init__(self, base: str, net: Seeded, proc: subprocess.Popen[bytes]) -> None:
        self.base, self.net, self.proc = base, net, proc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("portal-browser")
    net = seed_now(data_dir, definitions)
    port = free_port()
    env = {**cli_env(), "FHIR_EXCHANGE_AUTH": "on", "FHIR_EXCHANGE_PORTAL_POLL_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port), "--data-dir",
                             str(data_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/portal/login", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((proc.stdout.read() if proc.stdout else b"").decode())
        time.sleep(0.1)
    try:
        yield Site(base, net, proc)
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Person:
    """One person at one institution: a browser context (its own cookies) and a page."""

    def __init__(self, browser: object, site: Site, username: str, locale: str) -> None:
        self.site, self.username = site, username
        self.context = browser.new_context(locale=locale, viewport={"width": 1024, "height": 1366})  # type: ignore[attr-defined]
        self.context.set_default_timeout(15000)
        self.page = self.context.new_page()
        self.shots = 0

    def go(self, path: str) -> None:
        self.page.goto(self.site.base + path)

    def shot(self, name: str) -> None:
        self.shots += 1
        self.page.screenshot(path=str(ARTIFACTS / f"{self.username}-{self.shots:02d}-{name}.png"), full_page=True)

    def sign_in(self) -> None:
        self.go("/portal/consults")
        assert "/portal/login" in self.page.url
        self.page.locator("#username").fill(self.username)
        self.page.locator("#password").fill(PASSWORD)
        self.page.locator("#password").press("Enter")  # the keyboard submits the form
        self.page.wait_for_url(re.compile(r".*/portal/consults$"))


def test_a_consult_end_to_end_in_the_browser(browser: object, site: Site, tmp_path: Path) -> None:
    form, image = tmp_path / "consent-signed.pdf", tmp_path / "chest-xray.png"
    form.write_bytes(PDF)
    image.write_bytes(PNG)
    partner = Person(browser, site, "park.partner", "ko-KR")
    hub = Person(browser, site, "kim.hub", "en-US")
    expect = playwright.expect

    # The hub's consultant has the inbox open before anything arrives.
    hub.sign_in()
    expect(hub.page.locator("html")).to_have_attribute("lang", "en")
    expect(hub.page.locator("#incoming")).to_contain_text("No consults.")
    hub.shot("inbox-empty")

    # The partner (Korean browser) registers a patient, records the consent, requests a consult.
    partner.sign_in()
    expect(partner.page.locator("html")).to_have_attribute("lang", "ko")
    partner.page.get_by_role("link", name="환자").click()
    partner.page.get_by_label("이름", exact=True).fill("홍길동")
    partner.page.get_by_label("등록번호", exact=True).fill("MRN-2001")
    partner.page.get_by_label("여", exact=True).check()
    partner.page.get_by_label("생년월일").fill("1941-03-02")
    partner.shot("register-patient")
    partner.page.get_by_role("button", name="환자 등록").click()
    expect(partner.page.locator("h1")).to_contain_text("홍길동")
    partner.page.get_by_label("종료일").fill("2099-12-31")
    partner.page.get_by_label(re.compile("서명한 동의서")).set_input_files(str(form))
    partner.page.get_by_role("button", name="환자 동의 기록").click()
    expect(partner.page.locator("#consents li[data-state=active]")).to_have_count(1)
    partner.shot("consent-recorded")
    partner.page.get_by_role("link", name="협진 의뢰하기").click()
    partner.page.get_by_label("진료과").select_option("01")
    partner.page.get_by_label("긴급", exact=True).check()
    partner.page.get_by_label("의뢰 사유").fill("호흡곤란")
    partner.page.get_by_label(re.compile("진단")).fill("J96.0")
    partner.page.get_by_label("자문 내용").fill("전원이 필요할까요, 여기서 치료할까요?")
    partner.page.get_by_label(re.compile("첨부 파일")).set_input_files(str(image))
    partner.shot("new-consult")
    partner.page.get_by_role("button", name="의뢰 보내기").click()
    partner.page.wait_for_url(re.compile(r".*/portal/consults/[0-9a-f-]{36}$"))
    consult_path = partner.page.url.removeprefix(site.base)
    expect(partner.page.get_by_test_id("status")).to_contain_text("의뢰됨")
    partner.shot("consult-requested")

    # It appears in the hub's open inbox without a reload (the page polls every second here).
    row = hub.page.locator(f"#incoming tr[data-id='{consult_path.rsplit('/', 1)[1]}']")
    expect(row).to_be_visible(timeout=10000)
    expect(hub.page.locator("#arrivals")).to_be_visible()
    expect(row).to_contain_text("Urgent")
    hub.shot("inbox-new-consult")
    row.get_by_role("link").click()
    expect(hub.page.locator("#documents")).to_contain_text("chest-xray.png")
    href = hub.page.locator("#documents a").get_attribute("href")
    assert href is not None
    assert hub.context.request.get(site.base + href).body() == PNG  # the consent lets the hub read it
    hub.shot("consult-received")
    # Keyboard first: the first Tab reaches the skip link; at tablet width nothing scrolls sideways.
    hub.page.keyboard.press("Tab")
    expect(hub.page.locator(".skip")).to_be_focused()
    hub.page.set_viewport_size({"width": 768, "height": 1024})
    assert hub.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    hub.shot("tablet-portrait")
    hub.page.set_viewport_size({"width": 1024, "height": 1366})
    hub.page.get_by_role("button", name="Accept").click()
    expect(hub.page.get_by_test_id("status")).to_contain_text("Accepted")
    hub.page.get_by_label("Ask the requester for information").fill("SpO2 on room air?")
    hub.page.get_by_role("button", name="Ask the requester for information").click()
    expect(hub.page.get_by_test_id("status")).to_contain_text("Waiting for information")
    hub.shot("question-asked")

    # The partner answers.
    partner.page.reload()
    expect(partner.page.locator(".question")).to_contain_text("SpO2 on room air?")
    partner.page.get_by_label("답변 내용").fill("실내 공기에서 88%")
    partner.page.get_by_role("button", name="답변", exact=True).click()
    expect(partner.page.locator(".answer")).to_contain_text("88%")
    partner.shot("answered")

    # The hub reads the answer, signs the consult note with its recommendation.
    hub.page.reload()
    expect(hub.page.locator(".answer")).to_contain_text("88%")
    hub.page.get_by_label("Consult note", exact=True).last.fill("Start oxygen 2 L/min; recheck tomorrow.")
    hub.page.get_by_label("Manage locally (transfer avoided)").check()
    hub.page.get_by_label("I sign this note as its author").check()
    hub.shot("note-written")
    hub.page.get_by_role("button", name="Sign and send").click()
    expect(hub.page.get_by_test_id("status")).to_contain_text("Completed")
    hub.shot("consult-completed")

    # The partner reads the note, schedules the follow-up, closes the consult; the timeline shows it all.
    partner.page.reload()
    expect(partner.page.get_by_test_id("note-text")).to_contain_text("Start oxygen 2 L/min")
    expect(partner.page.get_by_test_id("recommendation")).to_contain_text("현지 관리")
    partner.page.get_by_label("기한").fill("2099-01-31")
    partner.page.get_by_label("추적 관찰 내용").fill("퇴원 후 재평가")
    partner.page.get_by_role("button", name="추적 관찰 예약").click()
    expect(partner.page.locator("#follow-ups")).to_contain_text("2099-01-31")
    partner.page.get_by_role("button", name="협진 종료").click()
    expect(partner.page.locator("#timeline")).to_contain_text("협진 종료")
    for event in ("협진 의뢰", "수락됨", "질의", "답변", "소견서 서명", "추적 관찰 예약"):
        expect(partner.page.locator("#timeline")).to_contain_text(event)
    partner.shot("timeline")

    # The language switch is remembered.
    partner.page.get_by_role("link", name="English").click()
    expect(partner.page.locator("html")).to_have_attribute("lang", "en")
    partner.go("/portal/consults")
    expect(partner.page.locator("h1")).to_have_text("Consults")

    # The network dashboard counts it.
    hub.go("/portal/dashboard")
    expect(hub.page.get_by_test_id("requested")).to_have_text("1")
    expect(hub.page.get_by_test_id("avoided")).to_have_text("1")
    expect(hub.page.locator("svg.chart")).to_have_count(4)
    hub.shot("dashboard")

    # A third institution's user sees nothing of it.
    other = Person(browser, site, "choi.other", "en-US")
    other.sign_in()
    expect(other.page.locator("#incoming")).to_contain_text("No consults.")
    expect(other.page.locator("#outgoing")).to_contain_text("No consults.")
    other.go(consult_path)
    expect(other.page.locator("h1")).to_have_text("Not found")
    other.go("/portal/patients?q=MRN-2001")
    expect(other.page.locator("#patient-list")).to_contain_text("No patients found.")
    other.go("/portal/dashboard")
    expect(other.page.get_by_test_id("requested")).to_have_text("0")
    other.shot("third-institution")

    # Signing out ends the session.
    other.page.get_by_role("button", name="Sign out").click()
    other.go("/portal/consults")
    assert "/portal/login" in other.page.url
