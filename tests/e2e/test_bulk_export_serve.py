"""End to end: a bulk export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) from a real
``python -m fhir_exchange serve`` process over TCP: kick-off with ``Prefer: respond-async``, polling
until the manifest, the NDJSON files streamed, cancellation; the files are where the settings say."""

from __future__ import annotations

import time

import httpx
import orjson

from tests.e2e.conftest import Server


def test_export_over_tcp(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=10) as c:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": f"e{i}", "gender": "female"},
             "request": {"method": "PUT", "url": f"Patient/e{i}"}} for i in range(120)]}
        assert c.post("", json=bundle).status_code == 200
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
               "subject": {"reference": "Patient/e7"}}
        assert c.post("/Observation", json=obs).status_code == 201

        kick = c.get("/Patient/$export", params={"_type": "Patient,Observation"},
                     headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
        assert kick.status_code == 202, kick.text
        status_url = kick.headers["content-location"]
        assert status_url.startswith(server.base + "/bulk-status/")
        deadline = time.monotonic() + 30
        while True:
            r = c.get(status_url)
            if r.status_code == 200:
                break
            assert r.status_code == 202, r.text
            assert int(r.headers["retry-after"]) > 0
            assert time.monotonic() < deadline, "the export did not complete"
            time.sleep(0.1)
        manifest = r.json()
        counts = {e["type"]: e["count"] for e in manifest["output"]}
        assert counts == {"Patient": 120, "Observation": 1}
        seen: set[str] = set()
        for entry in manifest["output"]:
            with c.stream("GET", entry["url"]) as download:
                assert download.status_code == 200
                assert download.headers["content-type"].startswith("application/fhir+ndjson")
                lines = [line for line in download.iter_lines() if line]
            resources = [orjson.loads(line) for line in lines]
            assert len(resources) == entry["count"]
            seen.update(f"{res['resourceType']}/{res['id']}" for res in resources)
        assert len(seen) == 121 and "Patient/e119" in seen
        job = status_url.rsplit("/", 1)[1]
        assert (server.data_dir / "exports" / job / "Patient-1.ndjson").is_file()

        assert c.delete(status_url).status_code == 202
        assert c.get(status_url).status_code == 404
        assert not (server.data_dir / "exports" / job).exists()
