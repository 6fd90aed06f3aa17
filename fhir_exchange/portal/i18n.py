"""The portal's two languages, Korean and English: the messages, and which language a request gets (the
``lang`` cookie the switch sets, else the browser's Accept-Language, else Korean, the pilot's language).

Messages are looked up by key; a key missing from one language falls back to English, then to the key
itself, so a forgotten translation shows up on the page instead of failing it.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("ko", "en")
DEFAULT = "ko"
COOKIE = "fx_lang"

# HIRA department names in English (KR Core's CodeSystem has Korean displays only).
DEPARTMENTS_EN = {
    "00": "General practice", "01": "Internal medicine", "02": "Neurology", "03": "Psychiatry",
    "04": "General surgery", "05": "Orthopaedic surgery", "06": "Neurosurgery", "07": "Thoracic surgery",
    "08": "Plastic surgery", "09": "Anaesthesiology and pain medicine", "10": "Obstetrics and gynaecology",
    "11": "Paediatrics", "12": "Ophthalmology", "13": "Otorhinolaryngology", "14": "Dermatology",
    "15": "Urology", "16": "Radiology", "17": "Radiation oncology", "18": "Pathology",
    "19": "Laboratory medicine", "20": "Tuberculosis", "21": "Rehabilitation medicine", "22": "Nuclear medicine",
    "23": "Family medicine", "24": "Emergency medicine", "25": "Occupational and environmental medicine",
    "26": "Preventive medicine",
}

EN: dict[str, str] = {
    "app.name": "Remote consultation portal",
    "nav.worklist": "Consults", "nav.patients": "Patients", "nav.dashboard": "Network dashboard",
    "nav.logout": "Sign out", "nav.skip": "Skip to content", "nav.language": "Language",
    "login.title": "Sign in", "login.username": "Username", "login.password": "Password", "login.submit": "Sign in",
    "login.failed": "The username or password is wrong.",
    "login.locked": "Too many wrong passwords: the account is locked until {until}.",
    "login.disabled": "This account is disabled. Ask your institution's administrator.",
    "logout.done": "You are signed out.",
    "csrf.title": "The form has expired", "csrf.text": "Reload the page and send the form again.",
    "notfound.title": "Not found", "notfound.text": "There is nothing here you may see.",
    "refused.title": "The request was refused",
    "common.back": "Back", "common.save": "Save", "common.none": "None", "common.filter": "Filter",
    "common.all": "All", "common.yes": "Yes", "common.no": "No", "common.withheld": "Withheld by the consent",
    "common.download": "Download", "common.bytes": "{n} bytes", "common.done": "Saved.",
    "worklist.title": "Consults", "worklist.incoming": "Incoming consults",
    "worklist.outgoing": "Consults we requested",
    "worklist.none": "No consults.", "worklist.new-arrived": "New consults have arrived.",
    "worklist.status": "Status", "worklist.urgency": "Urgency", "worklist.department": "Department",
    "worklist.patient": "Patient", "worklist.from": "From", "worklist.to": "To", "worklist.owner": "Assigned to",
    "worklist.authored": "Requested", "worklist.kind": "Kind", "worklist.due": "Due",
    "kind.consult": "Consult", "kind.follow-up": "Follow-up",
    "patients.title": "Patients", "patients.search": "Find a patient", "patients.query": "Name or record number",
    "patients.register": "Register a patient", "patients.name": "Name", "patients.mrn": "Record number",
    "patients.mrn-hint": "Left empty, a number is made up.", "patients.gender": "Sex",
    "patients.birth-date": "Date of birth", "patients.none": "No patients found.",
    "gender.female": "Female", "gender.male": "Male", "gender.other": "Other", "gender.unknown": "Unknown",
    "patient.title": "Patient", "patient.consents": "Consents", "patient.consults": "Consult requests",
    "patient.new-consult": "Request a consult", "patient.summary": "Patient summary",
    "consent.record": "Record the patient's consent", "consent.recipient": "Institution consulted",
    "consent.start": "From", "consent.end": "Until", "consent.signed": "Signed on",
    "consent.form": "Signed consent form (PDF, PNG or JPEG, at most {mb} MB)", "consent.withdraw": "Withdraw",
    "consent.withhold": "The patient withholds documents (attachments are not shown to the consultant)",
    "consent.state.active": "Active", "consent.state.expired": "Expired", "consent.state.future": "Not yet valid",
    "consent.state.inactive": "Withdrawn", "consent.none": "No consent recorded.",
    "new.title": "Request a consult", "new.hub": "Institution consulted", "new.department": "Department",
    "new.priority": "Urgency", "new.reason": "Reason for the consult", "new.reason-code": "Diagnosis (KCD-8 code)",
    "new.question": "Question to the consultant", "new.files": "Attachments (PDF, PNG or JPEG, at most {mb} MB each)",
    "new.submit": "Send the request", "new.no-hub": "Your institution belongs to no consult network yet.",
    "priority.routine": "Routine", "priority.urgent": "Urgent", "priority.asap": "As soon as possible",
    "priority.stat": "Immediately",
    "consult.title": "Consult", "consult.request": "Request", "consult.requester": "Requested by",
    "consult.consultant": "Consulted", "consult.owner": "Assigned to", "consult.reason": "Reason",
    "consult.question": "Question", "consult.documents": "Attachments", "consult.timeline": "Timeline",
    "consult.questions": "Questions and answers", "consult.notes": "Consult note",
    "consult.recommendation": "Recommendation",
    "consult.follow-ups": "Follow-ups", "consult.status": "Status", "consult.number": "Request number",
    "consult.signed-by": "Signed by {who} on {at}",
    "action.accept": "Accept", "action.assignee": "Consultant", "action.reject": "Reject",
    "action.reject-reason": "Why it is rejected", "action.assign": "Assign to a colleague",
    "action.ask": "Ask the requester for information", "action.ask-text": "Your question",
    "action.answer": "Answer", "action.answer-text": "Your answer", "action.note": "Write the consult note",
    "action.note-title": "Title", "action.note-text": "Consult note", "action.sign": "I sign this note as its author",
    "action.note-submit": "Sign and send", "action.follow-up": "Schedule a follow-up", "action.due": "Due by",
    "action.follow-up-note": "What to follow up", "action.revoke": "Withdraw the request",
    "action.close": "Close the consult",
    "rec.manage-locally": "Manage locally (transfer avoided)", "rec.transfer-routine": "Transfer (routine)",
    "rec.transfer-urgent": "Transfer (urgent)", "rec.follow-up-consult": "Follow-up consult",
    "status.open": "Open (not finished)", "status.draft": "Draft", "status.requested": "Requested",
    "status.received": "Received",
    "status.accepted": "Accepted", "status.rejected": "Rejected", "status.ready": "Ready",
    "status.cancelled": "Cancelled", "status.in-progress": "In progress", "status.on-hold": "On hold",
    "status.failed": "Failed", "status.completed": "Completed", "status.entered-in-error": "Entered in error",
    "business.triage": "Triage", "business.awaiting-information": "Waiting for information",
    "business.information-provided": "Information provided", "business.under-review": "Under review",
    "business.report-drafting": "Writing the report", "business.report-available": "Report available",
    "business.abort-requested": "Cancellation asked", "business.overdue": "Overdue",
    "event.requested": "Consult requested", "event.follow-up": "Follow-up scheduled",
    "event.assigned": "Assigned", "event.question": "Question asked", "event.answer": "Question answered",
    "event.note": "Consult note signed", "request.completed": "Consult closed", "request.revoked": "Request withdrawn",
    "dashboard.title": "Network dashboard", "dashboard.period": "The last {weeks} weeks ({start} to {end})",
    "dashboard.per-week": "Consults requested per week", "dashboard.turnaround": "Turnaround (hours)",
    "dashboard.to-accept": "Until accepted", "dashboard.to-note": "Until the consult note",
    "dashboard.median": "median", "dashboard.p90": "90th percentile",
    "dashboard.recommendations": "Recommendations", "dashboard.avoided": "Transfers avoided",
    "dashboard.follow-ups": "Follow-ups", "dashboard.due": "Due", "dashboard.overdue": "Overdue",
    "dashboard.pair": "Hub - partner", "dashboard.week": "Week of", "dashboard.table": "The figures as a table",
    "dashboard.none": "No consults in this period.", "dashboard.requested": "Requested",
    "dashboard.completed": "Completed", "dashboard.rejected": "Rejected",
    "error.accept-first": "Accept the consult first.", "error.answer-required": "Write an answer.",
    "error.assignee": "Choose a consultant of your institution.",
    "error.birth-date": "The date of birth is not a date.",
    "error.consent-form": "Attach the signed consent form.", "error.due": "The due date must be a date from today on.",
    "error.file-empty": "The file {name} is empty.",
    "error.file-too-large": "The file {name} is larger than {limit} MB.",
    "error.file-type": "The file {name} is not a PDF, PNG or JPEG.", "error.gender": "Choose the patient's sex.",
    "error.kcd": "The diagnosis is not a KCD-8 code (such as I63.9).",
    "error.mrn-taken": "The record number {mrn} is already used.", "error.name-required": "Write the patient's name.",
    "error.no-consent": "The patient has no active consent naming this institution: record it first.",
    "error.not-found": "Not found.", "error.not-open": "The consult is not open.",
    "error.note-required": "Write the consult note.", "error.period": "The consent's period is not valid.",
    "error.priority": "Choose an urgency.", "error.question-required": "Write the question.",
    "error.reason-required": "Write the reason.", "error.recipient": "Choose the institution consulted.",
    "error.recommendation": "Choose a recommendation.", "error.sign": "Sign the note to send it.",
    "error.signed": "The signing date is not a date.", "error.too-long": "The text is longer than {limit} characters.",
    "error.department": "Choose a department the institution offers.",
    "error.hub": "Choose an institution of your network.",
    "error.refused": "The exchange refused this: {reason}",
    "error.body-too-large": "The form is larger than the exchange accepts.",
    "error.bad-form": "The form could not be read: send it again.",
}

KO: dict[str, str] = {
    "app.name": "원격협진 포털",
    "nav.worklist": "협진 목록", "nav.patients": "환자", "nav.dashboard": "네트워크 현황",
    "nav.logout": "로그아웃", "nav.skip": "본문으로 건너뛰기", "nav.language": "언어",
    "login.title": "로그인", "login.username": "아이디", "login.password": "비밀번호", "login.submit": "로그인",
    "login.failed": "아이디 또는 비밀번호가 틀렸습니다.",
    "login.locked": "비밀번호를 여러 번 틀려 {until}까지 계정이 잠겼습니다.",
    "login.disabled": "사용이 중지된 계정입니다. 기관 관리자에게 문의하세요.",
    "logout.done": "로그아웃되었습니다.",
    "csrf.title": "양식이 만료되었습니다", "csrf.text": "페이지를 새로 고친 뒤 다시 보내 주세요.",
    "notfound.title": "찾을 수 없음", "notfound.text": "볼 수 있는 내용이 없습니다.",
    "refused.title": "요청이 거부되었습니다",
    "common.back": "뒤로", "common.save": "저장", "common.none": "없음", "common.filter": "거르기",
    "common.all": "전체", "common.yes": "예", "common.no": "아니요", "common.withheld": "동의 범위 밖이라 볼 수 없음",
    "common.download": "내려받기", "common.bytes": "{n}바이트", "common.done": "저장되었습니다.",
    "worklist.title": "협진 목록", "worklist.incoming": "받은 협진 의뢰", "worklist.outgoing": "보낸 협진 의뢰",
    "worklist.none": "협진이 없습니다.", "worklist.new-arrived": "새 협진 의뢰가 도착했습니다.",
    "worklist.status": "상태", "worklist.urgency": "긴급도", "worklist.department": "진료과",
    "worklist.patient": "환자", "worklist.from": "의뢰 기관", "worklist.to": "자문 기관", "worklist.owner": "담당",
    "worklist.authored": "의뢰일", "worklist.kind": "종류", "worklist.due": "기한",
    "kind.consult": "협진", "kind.follow-up": "추적 관찰",
    "patients.title": "환자", "patients.search": "환자 찾기", "patients.query": "이름 또는 등록번호",
    "patients.register": "환자 등록", "patients.name": "이름", "patients.mrn": "등록번호",
    "patients.mrn-hint": "비워 두면 번호를 만들어 드립니다.", "patients.gender": "성별",
    "patients.birth-date": "생년월일", "patients.none": "찾은 환자가 없습니다.",
    "gender.female": "여", "gender.male": "남", "gender.other": "기타", "gender.unknown": "모름",
    "patient.title": "환자", "patient.consents": "동의서", "patient.consults": "협진 의뢰",
    "patient.new-consult": "협진 의뢰하기", "patient.summary": "환자 요약",
    "consent.record": "환자 동의 기록", "consent.recipient": "자문 기관",
    "consent.start": "시작일", "consent.end": "종료일", "consent.signed": "서명일",
    "consent.form": "서명한 동의서 (PDF, PNG, JPEG, 최대 {mb}MB)", "consent.withdraw": "철회",
    "consent.withhold": "환자가 문서 공개를 거부함 (첨부 파일을 자문 기관에 보이지 않음)",
    "consent.state.active": "유효", "consent.state.expired": "만료", "consent.state.future": "시작 전",
    "consent.state.inactive": "철회됨", "consent.none": "기록된 동의가 없습니다.",
    "new.title": "협진 의뢰하기", "new.hub": "자문 기관", "new.department": "진료과",
    "new.priority": "긴급도", "new.reason": "의뢰 사유", "new.reason-code": "진단 (KCD-8 코드)",
    "new.question": "자문 내용", "new.files": "첨부 파일 (PDF, PNG, JPEG, 파일당 최대 {mb}MB)",
    "new.submit": "의뢰 보내기", "new.no-hub": "소속 기관이 아직 협진 네트워크에 속해 있지 않습니다.",
    "priority.routine": "일반", "priority.urgent": "긴급", "priority.asap": "가능한 빨리", "priority.stat": "즉시",
    "consult.title": "협진", "consult.request": "의뢰", "consult.requester": "의뢰자",
    "consult.consultant": "자문 기관", "consult.owner": "담당 의사", "consult.reason": "의뢰 사유",
    "consult.question": "자문 내용", "consult.documents": "첨부 파일", "consult.timeline": "진행 경과",
    "consult.questions": "질의와 답변", "consult.notes": "협진 소견서", "consult.recommendation": "권고",
    "consult.follow-ups": "추적 관찰", "consult.status": "상태", "consult.number": "의뢰 번호",
    "consult.signed-by": "{who} 서명 ({at})",
    "action.accept": "수락", "action.assignee": "담당 의사", "action.reject": "거절",
    "action.reject-reason": "거절 사유", "action.assign": "동료에게 배정",
    "action.ask": "의뢰 기관에 추가 정보 요청", "action.ask-text": "질문",
    "action.answer": "답변", "action.answer-text": "답변 내용", "action.note": "협진 소견서 작성",
    "action.note-title": "제목", "action.note-text": "소견", "action.sign": "작성자로서 이 소견서에 서명합니다",
    "action.note-submit": "서명하고 보내기", "action.follow-up": "추적 관찰 예약", "action.due": "기한",
    "action.follow-up-note": "추적 관찰 내용", "action.revoke": "의뢰 철회", "action.close": "협진 종료",
    "rec.manage-locally": "현지 관리 (전원 회피)", "rec.transfer-routine": "전원 (일반)",
    "rec.transfer-urgent": "전원 (긴급)", "rec.follow-up-consult": "추가 협진",
    "status.open": "진행 중인 모든 협진", "status.draft": "작성 중", "status.requested": "의뢰됨",
    "status.received": "접수됨",
    "status.accepted": "수락됨", "status.rejected": "거절됨", "status.ready": "준비됨",
    "status.cancelled": "취소됨", "status.in-progress": "진행 중", "status.on-hold": "보류",
    "status.failed": "실패", "status.completed": "완료", "status.entered-in-error": "오류로 입력됨",
    "business.triage": "분류 중", "business.awaiting-information": "추가 정보 대기",
    "business.information-provided": "정보 제공됨", "business.under-review": "검토 중",
    "business.report-drafting": "소견서 작성 중", "business.report-available": "소견서 있음",
    "business.abort-requested": "취소 요청됨", "business.overdue": "기한 지남",
    "event.requested": "협진 의뢰", "event.follow-up": "추적 관찰 예약", "event.assigned": "담당 배정",
    "event.question": "질의", "event.answer": "답변", "event.note": "소견서 서명",
    "request.completed": "협진 종료", "request.revoked": "의뢰 철회",
    "dashboard.title": "네트워크 현황", "dashboard.period": "최근 {weeks}주 ({start} ~ {end})",
    "dashboard.per-week": "주별 협진 의뢰 수", "dashboard.turnaround": "처리 시간 (시간)",
    "dashboard.to-accept": "수락까지", "dashboard.to-note": "소견서까지",
    "dashboard.median": "중앙값", "dashboard.p90": "90백분위",
    "dashboard.recommendations": "권고", "dashboard.avoided": "전원 회피",
    "dashboard.follow-ups": "추적 관찰", "dashboard.due": "예정", "dashboard.overdue": "기한 지남",
    "dashboard.pair": "거점 - 협력 기관", "dashboard.week": "주 시작일", "dashboard.table": "표로 보기",
    "dashboard.none": "이 기간에 협진이 없습니다.", "dashboard.requested": "의뢰",
    "dashboard.completed": "완료", "dashboard.rejected": "거절",
    "error.accept-first": "먼저 협진을 수락하세요.", "error.answer-required": "답변을 쓰세요.",
    "error.assignee": "소속 기관의 의사를 고르세요.", "error.birth-date": "생년월일이 날짜가 아닙니다.",
    "error.consent-form": "서명한 동의서를 첨부하세요.", "error.due": "기한은 오늘 이후 날짜여야 합니다.",
    "error.file-empty": "{name} 파일이 비어 있습니다.", "error.file-too-large": "{name} 파일이 {limit}MB보다 큽니다.",
    "error.file-type": "{name} 파일은 PDF, PNG, JPEG가 아닙니다.", "error.gender": "환자의 성별을 고르세요.",
    "error.kcd": "진단이 KCD-8 코드(예: I63.9)가 아닙니다.",
    "error.mrn-taken": "등록번호 {mrn}은(는) 이미 쓰이고 있습니다.", "error.name-required": "환자 이름을 쓰세요.",
    "error.no-consent": "이 기관에 대한 유효한 환자 동의가 없습니다. 먼저 동의를 기록하세요.",
    "error.not-found": "찾을 수 없습니다.", "error.not-open": "진행 중인 협진이 아닙니다.",
    "error.note-required": "소견을 쓰세요.", "error.period": "동의 기간이 올바르지 않습니다.",
    "error.priority": "긴급도를 고르세요.", "error.question-required": "질문을 쓰세요.",
    "error.reason-required": "사유를 쓰세요.", "error.recipient": "자문 기관을 고르세요.",
    "error.recommendation": "권고를 고르세요.", "error.sign": "보내려면 소견서에 서명하세요.",
    "error.signed": "서명일이 날짜가 아닙니다.", "error.too-long": "글이 {limit}자보다 깁니다.",
    "error.department": "그 기관이 제공하는 진료과를 고르세요.", "error.hub": "네트워크의 기관을 고르세요.",
    "error.refused": "교환 서버가 거부했습니다: {reason}",
    "error.body-too-large": "양식이 교환 서버가 받는 크기보다 큽니다.",
    "error.bad-form": "양식을 읽을 수 없습니다. 다시 보내 주세요.",
}

MESSAGES = {"en": EN, "ko": KO}


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: the switch's cookie, else the first supported Accept-Language range by
    quality (RFC 9110 12.5.4), else Korean."""
    if cookie in LANGUAGES:
        return str(cookie)
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-", 1)[0]
        if primary in LANGUAGES and q > 0:
            ranked.append((-q, i, primary))
    return sorted(ranked)[0][2] if ranked else DEFAULT


def translate(lang: str, key: str, **params: Any) -> str:
    text = MESSAGES.get(lang, EN).get(key) or EN.get(key) or key
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text


def department_name(lang: str, code: str, korean: str) -> str:
    if lang == "en":
        return DEPARTMENTS_EN.get(code, korean or code)
    return korean or code
