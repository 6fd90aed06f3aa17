"""Authentication end to end, as an operator and two hospitals' systems use it: ``fhir-exchange
institution add`` and ``client add`` on the command line, a real ``fhir-exchange serve`` over TLS
that requires tokens by default, SMART Backend Services tokens made by scripts/smart_client.py,
``client disable`` taking effect at once on the running server, and a VPN-linked EMR authenticating
with a client certificate (mutual TLS)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scripts.smart_client import get_token, keygen
from tests.e2e.conftest import cli_env, free_port

ROOT = Path(__file__).resolve().parents[2]


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def _cert(subject: x509.Name, key: Any, issuer: x509.Name, issuer_key: Any, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[str, str]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Regional exchange test CA", "fhir-exchange tests")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    ca_file, _ = _write(folder / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _write(folder / "server", _cert(_name("127.0.0.1", "exchange"), server_key, ca_name, ca_key, server=True),
                    server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _write(folder / "emr-b", _cert(_name("emr-b", "Hospital B"), client_key, ca_name, ca_key), client_key)
    stranger_ca_key = ec.generate_private_key(ec.SECP256R1())
    stranger_name = _name("Someone else's CA", "elsewhere")
    stranger = _write(folder / "stranger", _cert(_name("emr-b", "Hospital B"), client_key, stranger_name,
                                                 stranger_ca_key), client_key)
    return {"ca": ca_file, "server": server, "client": client, "stranger": stranger}


def tls(ca: str, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def cli(data: Path, *args: str, base: str = "") -> Any:
    env = {k: v for k, v in cli_env().items() if k != "FHIR_EXCHANGE_AUTH"}
    if base:  # the command line learns the server's public address as the server does
        env["FHIR_EXCHANGE_PUBLIC_BASE_URL"] = base
    run = subprocess.run([sys.executable, "-m", "fhir_exchange", *args, "--data-dir", str(data)], env=env,
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def secure_server(tmp_path: Path, pki: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in cli_env().items() if k != "FHIR_EXCHANGE_AUTH"}  # the default: tokens required
    env["FHIR_EXCHANGE_PUBLIC_BASE_URL"] = f"https://127.0.0.1:{port}/fhir"
    proc = subprocess.Popen([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(port), "--data-dir",
                             str(data), "--certfile", pki["server"][0], "--keyfile", pki["server"][1],
                             "--client-ca", pki["ca"]], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "exited")
            try:
                if httpx.get(f"{base}/metadata", verify=tls(pki["ca"]), timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        yield base, data
    finally:
        proc.terminate()
        proc.wait(20)


def test_two_institutions_tokens_isolation_disable_and_mutual_tls(secure_server: tuple[str, Path],
                                                                   pki: dict[str, Any], tmp_path: Path) -> None:
    base, data = secure_server
    ca = tls(pki["ca"])
    assert httpx.get(f"{base}/Patient", verify=ca).status_code == 401  # serve requires tokens by default
    a = cli(data, "institution", "add", "--name", "가나요양병원", "--hira-id", "1234-5678", "--connection", "portal")
    b = cli(data, "institution", "add", "--name", "다라대학교병원", "--hira-id", "87654321", "--connection", "emr",
            "--endpoint-address", "https://emr.hospital-b.example/fhir")
    assert a["hira_id"] == "12345678" and a["organization"] != b["organization"]
    keys = {}
    for name, inst in (("a", a), ("b", b)):
        jwks, pem = keygen(f"emr-{name}")
        (tmp_path / f"{name}.jwks.json").write_text(json.dumps(jwks))
        extra = ["--cert-subject", "O=Hospital B, CN=emr-b"] if name == "b" else []
        client = cli(data, "client", "add", "--institution", inst["organization"], "--jwks",
                     str(tmp_path / f"{name}.jwks.json"), "--scope", "system/*.cruds", *extra, base=base)
        assert client["token_endpoint"] == f"{base}/auth/token"
        keys[name] = (client["client_id"], pem)
    tokens = {n: get_token(cid, pem, f"{base}/auth/token", "system/*.cruds", kid=f"emr-{n}", verify=ca)
              for n, (cid, pem) in keys.items()}
    http = {n: httpx.Client(base_url=base, verify=ca, headers={"Authorization": f"Bearer {t['access_token']}"})
            for n, t in tokens.items()}
    created = http["a"].post("/Patient", json={"resourceType": "Patient", "gender": "female"})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert http["a"].get(f"/Patient/{pid}").status_code == 200
    assert http["b"].get(f"/Patient/{pid}").status_code == 404
    # Mutual TLS: hospital B's EMR presents its certificate and needs no token.
    with httpx.Client(base_url=base, verify=tls(pki["ca"], pki["client"])) as emr:
        r = emr.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
        assert r.status_code == 201, r.text
        assert emr.get(f"/Patient/{pid}").status_code == 404
        assert http["b"].get(f"/Patient/{r.json()['id']}").status_code == 200  # B's, by certificate or token
    with pytest.raises(httpx.TransportError):  # a certificate from another CA fails the TLS handshake
        httpx.get(f"{base}/Patient", verify=tls(pki["ca"], pki["stranger"])).raise_for_status()
    # Disabling A's client refuses its live token at once, on the running server.
    assert cli(data, "client", "disable", keys["a"][0]) == {"client_id": keys["a"][0], "disabled": True}
    refused = http["a"].get(f"/Patient/{pid}")
    assert refused.status_code == 401 and "disabled" in refused.text
    # Every request so far was audited: B's auditors find B's denied read of A's patient.
    events = http["b"].get("/AuditEvent", params={"outcome": "4"}).json()
    assert events["total"] >= 1


def test_serve_refuses_client_ca_without_tls(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env().items() if k != "FHIR_EXCHANGE_AUTH"}
    run = subprocess.run([sys.executable, "-m", "fhir_exchange", "serve", "--port", str(free_port()),
                          "--data-dir", str(tmp_path), "--client-ca", "/nonexistent.pem"],
                         env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "--certfile" in run.stderr


def test_institution_add_refuses_a_malformed_hira_id_and_client_add_an_unknown_institution(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env().items() if k != "FHIR_EXCHANGE_AUTH"}
    base = [sys.executable, "-m", "fhir_exchange"]
    bad = subprocess.run([*base, "institution", "add", "--name", "X", "--hira-id", "12-34", "--connection", "emr",
                          "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "8 digits" in bad.stderr
    jwks, _ = keygen("k")
    (tmp_path / "k.json").write_text(json.dumps(jwks))
    unknown = subprocess.run([*base, "client", "add", "--institution", "nope", "--jwks", str(tmp_path / "k.json"),
                              "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "not a registered institution" in unknown.stderr
    assert os.path.exists(tmp_path / "fhir.db")
