"""Deployed as the operations guide says: TLS served directly, tokens required, metrics in multiprocess mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_auth_serve import pki, tls  # noqa: F401 - pki is a fixture
from tests.ops.conftest import serve


def test_tls_server_is_ready_and_counts_requests_across_processes(tmp_path: Path, pki: dict[str, Any]) -> None:  # noqa: F811
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    context = tls(pki["ca"])
    server = serve(tmp_path / "data", "--certfile", pki["server"][0], "--keyfile", pki["server"][1],
                   verify=context, PROMETHEUS_MULTIPROC_DIR=str(multiproc), FHIR_EXCHANGE_AUTH="on")
    try:
        with httpx.Client(base_url=server.root, verify=context, timeout=10) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ok"
            assert c.get("/fhir/Patient").status_code == 401  # tokens required: the deployed default
            assert c.get("/fhir/metadata").status_code == 200
            scraped = c.get("/metrics")
            assert scraped.status_code == 200
    finally:
        server.stop()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(scraped.text) for s in f.samples}
    assert values[("fhir_exchange_requests_total", (("interaction", "capabilities"), ("status", "200"),
                                                     ("type", "")))] == 1
    assert values[("fhir_exchange_requests_total", (("interaction", "other"), ("status", "401"), ("type", "")))] >= 1
    assert any(multiproc.glob("*.db"))  # the values were shared through the folder (multiprocess mode)
