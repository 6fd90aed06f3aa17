"""Issue 14, "Input details": control characters in FHIR strings are refused naming the element, and
gzip bodies are accepted with a bound on their inflated size (a zip bomb is 413, never inflated)."""

from __future__ import annotations

import gzip

import httpx
import pytest

PATIENT = b'{"resourceType":"Patient","gender":"female","name":[{"family":"Kim"}]}'


@pytest.mark.parametrize("char", ["\u0000", "\u0007", "\u001b", "\u000b"])
async def test_a_control_character_in_a_string_is_refused_naming_its_path(client: httpx.AsyncClient,
                                                                          char: str) -> None:
    r = await client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"Ki{char}m"}]})
    assert r.status_code in (400, 422), r.text
    issue = r.json()["issue"][0]
    assert issue["severity"] == "error"
    assert "control character" in issue["diagnostics"] and f"U+{ord(char):04X}" in issue["diagnostics"]
    assert any("name[0].family" in e for e in issue.get("expression", [])), issue
    assert (await client.get("/Patient", params={"_summary": "count"})).json()["total"] == 0


async def test_tab_carriage_return_and_line_feed_are_allowed(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient", json={"resourceType": "Patient",
                                            "name": [{"family": "Kim", "text": "Kim\tJi\r\nyoung"}]})
    assert r.status_code == 201, r.text


async def test_a_gzip_body_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient", content=gzip.compress(PATIENT),
                          headers={"Content-Type": "application/fhir+json", "Content-Encoding": "gzip"})
    assert r.status_code == 201, r.text
    r = await client.get(r.headers["Location"].split("/fhir", 1)[1])
    assert r.json()["name"][0]["family"] == "Kim"


async def test_a_zip_bomb_is_413_by_its_inflated_size(client: httpx.AsyncClient) -> None:
    # 1 MiB body limit in the test settings: 64 MiB of spaces is ~64 KiB compressed.
    bomb = gzip.compress(PATIENT[:-1] + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)
    assert len(bomb) < 1024 * 1024
    r = await client.post("/Patient", content=bomb,
                          headers={"Content-Type": "application/fhir+json", "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text
    assert "inflated body exceeds the limit" in r.json()["issue"][0]["diagnostics"]


async def test_corrupt_gzip_is_400_and_other_codings_415(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient", content=gzip.compress(PATIENT)[:-12] + b"garbage!",
                          headers={"Content-Type": "application/fhir+json", "Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "structure", r.text
    r = await client.post("/Patient", content=PATIENT,
                          headers={"Content-Type": "application/fhir+json", "Content-Encoding": "br"})
    assert r.status_code == 415 and "Content-Encoding" in r.json()["issue"][0]["diagnostics"]
    r = await client.post("/Patient", content=PATIENT,
                          headers={"Content-Type": "application/fhir+json", "Content-Encoding": "identity"})
    assert r.status_code == 201


async def _organization_chain(client: httpx.AsyncClient, n: int) -> None:
    for i in reversed(range(n)):
        org: dict[str, object] = {"resourceType": "Organization", "id": f"o{i}", "name": f"Org {i}"}
        if i + 1 < n:
            org["partOf"] = {"reference": f"Organization/o{i + 1}"}
        r = await client.put(f"/Organization/o{i}", json=org)
        assert r.status_code == 201, r.text


async def test_include_iterate_stopped_at_its_depth_limit_says_so(client: httpx.AsyncClient) -> None:
    await _organization_chain(client, 14)
    r = await client.get("/Organization", params={"_id": "o0", "_include:iterate": "Organization:partof"})
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    modes = [e["search"]["mode"] for e in entries]
    assert modes.count("match") == 1 and modes.count("include") == 10 and modes.count("outcome") == 1
    outcome = next(e["resource"] for e in entries if e["search"]["mode"] == "outcome")
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning" and outcome["issue"][0]["code"] == "incomplete"
    assert "stopped after 10 iterations" in outcome["issue"][0]["diagnostics"]


async def test_include_iterate_within_the_limit_has_no_warning(client: httpx.AsyncClient) -> None:
    await _organization_chain(client, 6)
    r = await client.get("/Organization", params={"_id": "o0", "_include:iterate": "Organization:partof"})
    modes = [e["search"]["mode"] for e in r.json()["entry"]]
    assert modes == ["match"] + ["include"] * 5
