#!/usr/bin/env python3
"""A SMART Backend Services client for fhir-exchange, small enough to read in one sitting.

    python scripts/smart_client.py keygen emr-a              # emr-a.jwks.json (public) + emr-a.key.pem (private)
    python scripts/smart_client.py token --client-id CLIENT_ID --key emr-a.key.pem \\
        --token-endpoint http://127.0.0.1:8080/fhir/auth/token --scope system/Patient.rs
                                                             # prints an access token

The key is ES384 (P-384); ``--alg RS384`` makes an RSA key instead. The assertion is the one SMART
Backend Services asks for: iss = sub = client_id, aud = the token endpoint, exp five minutes ahead at
most, a fresh jti. Needs PyJWT with cryptography and httpx (both installed with fhir-exchange's tests).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def keygen(name: str, alg: str = "ES384") -> tuple[dict[str, object], bytes]:
    """(public JWKS, private key PEM) for a new client key."""
    if alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
        public_jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": name, "alg": alg, "use": "sig"})
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return {"keys": [public_jwk]}, pem


def assertion(client_id: str, private_pem: bytes, token_endpoint: str, *, kid: str | None = None,
              alg: str | None = None, lifetime: int = 240) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    alg = alg or ("ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384")
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "exp": now + lifetime,
              "jti": str(uuid.uuid4())}
    return jwt.encode(claims, private_pem, algorithm=alg, headers={"kid": kid} if kid else None)


def get_token(client_id: str, private_pem: bytes, token_endpoint: str, scope: str, *, kid: str | None = None,
              verify: bool | ssl.SSLContext = True) -> dict[str, object]:
    """The token endpoint's answer: access_token, token_type, expires_in, scope."""
    form = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(client_id, private_pem, token_endpoint, kid=kid)}
    r = httpx.post(token_endpoint, data=form, verify=verify)
    r.raise_for_status()
    answer: dict[str, object] = r.json()
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write NAME.jwks.json (register it) and NAME.key.pem (keep it secret)")
    k.add_argument("name")
    k.add_argument("--alg", choices=["ES384", "RS384"], default="ES384")
    t = sub.add_parser("token", help="get an access token and print it")
    t.add_argument("--client-id", required=True)
    t.add_argument("--key", required=True, help="the private key PEM written by keygen")
    t.add_argument("--token-endpoint", required=True)
    t.add_argument("--scope", default="system/*.cruds")
    args = parser.parse_args()
    if args.command == "keygen":
        jwks, pem = keygen(args.name, args.alg)
        Path(f"{args.name}.jwks.json").write_text(json.dumps(jwks, indent=2))
        key_file = Path(f"{args.name}.key.pem")
        key_file.write_bytes(pem)
        key_file.chmod(0o600)
        print(f"wrote {args.name}.jwks.json (register it: fhir-exchange client add --jwks) and {key_file}")
        return 0
    pem = Path(args.key).read_bytes()
    kid = Path(args.key).name.removesuffix(".key.pem")
    try:
        answer = get_token(args.client_id, pem, args.token_endpoint, args.scope, kid=kid)
    except httpx.HTTPStatusError as exc:
        print(f"refused: {exc.response.status_code} {exc.response.text}", file=sys.stderr)
        return 1
    print(answer["access_token"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
