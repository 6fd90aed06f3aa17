"""A whole consult through the portal's HTTP forms (in process): the partner registers a patient,
records the consent with its signed form, requests a consult with an attachment; the hub accepts it,
asks, the partner answers, the hub signs a note; the partner schedules a follow-up and closes it. The
third institution sees none of it, and every step is what the FHIR API shows."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tests.portal.conftest import csrf_of, sign_in
from tests.portal.network import Seeded

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def post(client: TestClient, url: str, page_url: str, data: dict[str, str],
         files: list[tuple[str, tuple[str, bytes, str]]] | None = None) -> object:
    token = csrf_of(client.get(page_url).text)
    return client.post(url, data={"csrf": token, **data}, files=files, follow_redirects=False)


def test_a_consult_from_both_sides(app_client: TestClient, net: Seeded) -> None:
    c = sign_in(app_client, "park.partner")
    r = post(c, "/portal/patients", "/portal/patients", {"name": "홍길동", "mrn": "MRN-1", "gender": "female",
                                                          "birth_date": "1941-03-02"})
    assert r.status_code == 303, r.text
    patient_url = r.headers["location"]
    patient_id = patient_url.rsplit("/", 1)[1]
    r = post(c, f"/portal/patients/{patient_id}/consents", patient_url,
             {"recipient": net.hub, "start": "2026-01-01", "end": "2027-12-31", "signed": ""},
             files=[("form", ("consent.pdf", PDF, "application/pdf"))])
    assert r.status_code == 303, r.text
    page = c.get(patient_url).text
    assert 'data-state="active"' in page
    r = post(c, "/portal/consults", f"/portal/consults/new?patient={patient_id}",
             {"patient": patient_id, "hub": net.hub, "department": "01", "priority": "urgent",
              "reason": "Dyspnoea", "reason_code": "J96.0", "question": "Transfer or manage here?"},
             files=[("files", ("xray.png", PNG, "image/png"))])
    assert r.status_code == 303, r.text
    consult_url = r.headers["location"]

    h = sign_in(app_client, "kim.hub")
    inbox = h.get("/portal/consults").text
    assert consult_url in inbox
    r = post(h, f"{consult_url}/accept", consult_url, {"assignee": net.users["kim.hub"]})
    assert r.status_code == 303, r.text
    r = post(h, f"{consult_url}/assign", consult_url, {"assignee": net.users["lee.hub"]})
    assert r.status_code == 303, r.text
    assert "이내과" in h.get(consult_url).text  # the colleague now owns it
    r = post(h, f"{consult_url}/assign", consult_url, {"assignee": "not-a-colleague"})
    assert r.status_code == 422
    r = post(h, f"{consult_url}/ask", consult_url, {"text": "SpO2 on room air?"})
    assert r.status_code == 303, r.text

    c = sign_in(app_client, "park.partner")
    page = c.get(consult_url).text
    question = re.search(r'name="question" value="([^"]+)"', page)
    assert question
    r = post(c, f"{consult_url}/answer", consult_url, {"question": question.group(1), "text": "88%"})
    assert r.status_code == 303, r.text

    h = sign_in(app_client, "kim.hub")
    page = h.get(consult_url).text
    assert "88%" in page
    r = post(h, f"{consult_url}/note", consult_url, {"text": "Start oxygen; manage locally.",
                                                     "recommendation": "manage-locally", "sign": "1"})
    assert r.status_code == 303, r.text

    c = sign_in(app_client, "park.partner")
    page = c.get(consult_url).text
    assert "Start oxygen; manage locally." in page
    r = post(c, f"{consult_url}/follow-up", consult_url, {"due": "2099-01-01", "note": "After discharge"})
    assert r.status_code == 303, r.text

    # The consultant fulfils the follow-up like the first consult: accept, then a signed note.
    h = sign_in(app_client, "kim.hub")
    page = h.get(consult_url).text
    tasks = set(re.findall(r'name="task" value="([^"]+)"', page))
    assert len(tasks) == 1  # only the open follow-up still has actions
    follow_up = tasks.pop()
    assert post(h, f"{consult_url}/accept", consult_url, {"task": follow_up}).status_code == 303
    r = post(h, f"{consult_url}/note", consult_url, {"task": follow_up, "text": "Recovered well.",
                                                     "recommendation": "manage-locally", "sign": "1"})
    assert r.status_code == 303, r.text
    assert 'name="task"' not in h.get(consult_url).text

    c = sign_in(app_client, "park.partner")
    page = c.get(consult_url).text
    assert "Recovered well." in page  # the latest note
    r = post(c, f"{consult_url}/close", consult_url, {})
    assert r.status_code == 303, r.text

    o = sign_in(app_client, "choi.other")
    assert o.get(consult_url).status_code == 404
    assert consult_url not in o.get("/portal/consults").text
    assert o.get(f"/portal/patients/{patient_id}").status_code == 404


def new_consult(app_client: TestClient, net: Seeded, mrn: str, priority: str) -> str:
    c = sign_in(app_client, "park.partner")
    r = post(c, "/portal/patients", "/portal/patients", {"name": f"환자 {mrn}", "mrn": mrn, "gender": "male",
                                                          "birth_date": "1950-01-01"})
    patient_url = r.headers["location"]
    patient_id = patient_url.rsplit("/", 1)[1]
    post(c, f"/portal/patients/{patient_id}/consents", patient_url,
         {"recipient": net.hub, "start": "2026-01-01", "end": "2099-12-31"},
         files=[("form", ("consent.pdf", PDF, "application/pdf"))])
    r = post(c, "/portal/consults", f"/portal/consults/new?patient={patient_id}",
             {"patient": patient_id, "hub": net.hub, "department": "02", "priority": priority,
              "reason": "Falls", "question": "Neurology review?"})
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def test_rejection_withdrawal_and_inbox_filters(app_client: TestClient, net: Seeded) -> None:
    rejected, withdrawn = new_consult(app_client, net, "R-1", "routine"), new_consult(app_client, net, "R-2", "stat")
    h = sign_in(app_client, "kim.hub")
    assert rejected in h.get("/portal/consults?priority=routine").text
    assert rejected not in h.get("/portal/consults?priority=stat").text
    assert withdrawn in h.get("/portal/consults?priority=stat&department=02&status=open").text
    assert withdrawn not in h.get("/portal/consults?department=01").text
    rows = h.get("/portal/consults/rows?priority=stat").text  # what the inbox polls
    assert withdrawn in rows and rejected not in rows and "<html" not in rows
    assert post(h, f"{rejected}/reject", rejected, {"reason": ""}).status_code == 422  # a reason is required
    assert post(h, f"{rejected}/reject", rejected, {"reason": "Not our speciality"}).status_code == 303
    assert rejected not in h.get("/portal/consults?status=open").text
    # The requester may not move the consultant's Task: the workflow refuses, the page says why.
    c = sign_in(app_client, "park.partner")
    refused = post(c, f"{withdrawn}/accept", withdrawn, {})
    assert refused.status_code in (403, 409) and 'data-testid="error"' in refused.text
    page = c.get(rejected).text
    assert "Not our speciality" in page and "거절됨" in page
    assert post(c, f"{withdrawn}/revoke", withdrawn, {}).status_code == 303
    assert "의뢰 철회" in c.get(withdrawn).text


def test_documents_the_consent_withholds_are_marked_not_shown(app_client: TestClient, net: Seeded) -> None:
    c = sign_in(app_client, "park.partner")
    r = post(c, "/portal/patients", "/portal/patients", {"name": "보류 환자", "mrn": "W-1", "gender": "female",
                                                          "birth_date": "1944-04-04"})
    patient_url = r.headers["location"]
    patient_id = patient_url.rsplit("/", 1)[1]
    r = post(c, f"{patient_url}/consents", patient_url,
             {"recipient": net.hub, "start": "2026-01-01", "end": "2099-12-31", "withhold_documents": "1"},
             files=[("form", ("consent.pdf", PDF, "application/pdf"))])
    assert r.status_code == 303, r.text
    r = post(c, "/portal/consults", f"/portal/consults/new?patient={patient_id}",
             {"patient": patient_id, "hub": net.hub, "department": "01", "priority": "routine",
              "reason": "Wound", "question": "Dressing?"}, files=[("files", ("wound.png", PNG, "image/png"))])
    assert r.status_code == 303, r.text
    consult_url = r.headers["location"]
    mine = re.search(r'href="(/portal/files/Binary/[^"]+)"', c.get(consult_url).text)
    assert mine  # the requester sees its own attachment
    h = sign_in(app_client, "kim.hub")
    page = h.get(consult_url, headers={"accept-language": "en"}).text
    assert "Withheld by the consent" in page and "wound.png" not in page
    assert h.get(mine.group(1)).status_code == 404
