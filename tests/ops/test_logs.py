"""A real server's log lines: JSON, one per line, with the request id; no content, tokens or identifiers."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import httpx
import orjson

from fhir_exchange.logs import REQUEST_ID, JsonFormatter, TextFormatter, configure
from tests.ops.conftest import serve

MRN = "MRN-7731-SECRET"
FAMILY = "Zyxwvutsrq"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig-SECRET"


def test_json_lines_carry_the_request_id_and_nothing_private(tmp_path: Path) -> None:
    server = serve(tmp_path / "data", FHIR_EXCHANGE_LOG_FORMAT="json")
    try:
        with httpx.Client(base_url=f"{server.root}/fhir", timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            created = c.post("/Patient", headers={"X-Request-Id": "req-create-1"}, json={
                "resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.410.100", "value": MRN}],
                "name": [{"family": FAMILY}], "birthDate": "1961-04-05"})
            assert created.status_code == 201 and created.headers["x-request-id"] == "req-create-1"
            found = c.get("/Patient", params={"identifier": MRN, "family": FAMILY},
                          headers={"X-Request-Id": "req-search-2"})
            assert found.status_code == 200 and found.headers["x-request-id"] == "req-search-2"
            bad = c.post("/Patient", headers={"X-Request-Id": "req-bad-3"}, json={
                "resourceType": "Patient", "name": [{"family": FAMILY}], "birthDate": f"not-a-date-{MRN}"})
            assert bad.status_code == 400
            made_up = c.get("/metadata").headers["x-request-id"]
    finally:
        output = server.stop().decode()
    lines = [line for line in output.splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    access = {e["request_id"]: e for e in entries if e["logger"] == "fhir_exchange.access"}
    assert access["req-create-1"]["interaction"] == "create" and access["req-create-1"]["status"] == 201
    assert access["req-search-2"]["path"] == "/fhir/Patient" and access["req-search-2"]["type"] == "Patient"
    assert access["req-bad-3"]["status"] == 400
    assert made_up in access and access[made_up]["interaction"] == "capabilities"
    assert any(e["message"].startswith("Application startup complete") for e in entries)  # uvicorn's, as JSON
    for secret in (MRN, FAMILY, "1961-04-05", TOKEN, "SECRET"):
        assert secret not in output, secret


def test_formatters_fields_and_level() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure("warning", "json", stream)
    log = logging.getLogger("fhir_exchange.test")
    token = REQUEST_ID.set("abc")
    try:
        log.info("not shown")
        log.warning("shown %s", "here", extra={"interaction": "read"})
    finally:
        REQUEST_ID.reset(token)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    (line,) = stream.getvalue().splitlines()
    entry = orjson.loads(line)
    assert entry["message"] == "shown here" and entry["request_id"] == "abc" and entry["interaction"] == "read"
    assert entry["level"] == "warning"
    record = logging.LogRecord("x", logging.INFO, "", 0, "hello", None, None)
    assert "hello" in TextFormatter().format(record) and orjson.loads(JsonFormatter().format(record))["message"]
