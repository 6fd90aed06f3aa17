"""SMART v2 scopes and the two JWTs of SMART Backend Services: the client's assertion and our token."""

from __future__ import annotations

import time

import jwt
import pytest

from fhir_exchange.security import scopes
from fhir_exchange.security.tokens import (
    AuthError,
    issue_token,
    parse_jwks,
    unverified_client,
    verify_assertion,
    verify_token,
)
from scripts.smart_client import assertion, keygen

AUD = "https://exchange.example/fhir/auth/token"


def test_scopes_parse_v2_and_v1_forms() -> None:
    assert scopes.parse("system/Patient.rs") == scopes.Scope("Patient", "rs")
    assert scopes.parse("system/*.read") == scopes.Scope("*", "rs")
    assert scopes.parse("system/Observation.write") == scopes.Scope("Observation", "cud")
    assert scopes.parse("system/*.*") == scopes.Scope("*", "cruds")
    for refused in ("patient/Patient.rs", "user/*.cruds", "system/Patient.sr", "system/Patient.rs?x=1",
                    "system/patient.rs", "openid", "system/Patient.xyz", ""):
        assert scopes.parse(refused) is None, refused


def test_permits_and_readable_types() -> None:
    granted = frozenset({"system/Patient.rs", "system/Observation.cruds"})
    assert scopes.permits(granted, "Patient", "r") and scopes.permits(granted, "Patient", "s")
    assert not scopes.permits(granted, "Patient", "u") and not scopes.permits(granted, "Task", "r")
    assert not scopes.permits(granted, None, "s")  # system-level search needs system/*.s
    assert scopes.permits(frozenset({"system/*.rs"}), None, "s")
    assert scopes.readable_types(granted) == frozenset({"Patient", "Observation"})
    assert scopes.readable_types(frozenset({"system/*.r"})) is None


def test_grant_is_asked_intersected_with_allowed() -> None:
    allowed = frozenset({"system/Patient.rs", "system/Task.cruds"})
    assert scopes.grant("system/*.cruds", allowed) == ["system/Patient.rs", "system/Task.cruds"]
    assert scopes.grant("system/Patient.cruds system/Task.r", allowed) == ["system/Patient.rs", "system/Task.r"]
    assert scopes.grant("system/Observation.rs", allowed) == []
    assert scopes.grant("system/Patient.rs", frozenset({"system/*.cruds"})) == ["system/Patient.rs"]


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_signed_assertion_is_verified(alg: str) -> None:
    jwks, pem = keygen("k1", alg)
    token = assertion("client-1", pem, AUD, kid="k1")
    assert unverified_client(token) == "client-1"
    checked = verify_assertion(token, jwks, client_id="client-1", audience=AUD, now=int(time.time()))
    assert checked.client_id == "client-1" and checked.jti


def _refused(token: str, jwks: dict[str, object], now: int | None = None, audience: str = AUD) -> str:
    with pytest.raises(AuthError) as err:
        verify_assertion(token, jwks, client_id="client-1", audience=audience, now=now or int(time.time()))
    assert err.value.error == "invalid_client"
    return err.value.description


def test_forged_expired_far_wrong_audience_and_wrong_algorithm_assertions_are_refused() -> None:
    jwks, pem = keygen("k1")
    _other_jwks, other_pem = keygen("k1")
    assert "refused" in _refused(assertion("client-1", other_pem, AUD, kid="k1"), jwks)  # forged: another key
    assert "expired" in _refused(assertion("client-1", pem, AUD, kid="k1"), jwks, now=int(time.time()) + 600)
    assert "ahead" in _refused(assertion("client-1", pem, AUD, kid="k1", lifetime=3600), jwks)
    assert "refused" in _refused(assertion("client-1", pem, "https://elsewhere/token", kid="k1"), jwks)
    claims = {"iss": "client-1", "sub": "client-1", "aud": AUD, "exp": int(time.time()) + 60, "jti": "j"}
    for alg, key in (("HS256", "secret"), ("none", None)):
        forged = jwt.encode(claims, key, algorithm=alg)
        assert "RS384" in _refused(forged, jwks)
    assert "sub" in _refused(jwt.encode({**claims, "sub": "someone"}, pem, algorithm="ES384",
                                        headers={"kid": "k1"}), jwks)
    assert "kid" in _refused(assertion("client-1", pem, AUD, kid="k2"), jwks)


def test_a_jwks_with_private_members_is_not_registered() -> None:
    jwks, _pem = keygen("k1")
    with pytest.raises(ValueError, match="public keys only"):
        parse_jwks({"keys": [{**jwks["keys"][0], "d": "secret"}]})  # type: ignore[index, dict-item]
    with pytest.raises(ValueError):
        parse_jwks({"keys": []})


def test_access_tokens_are_verified_for_signature_audience_and_expiry() -> None:
    now = int(time.time())
    token = issue_token("a-secret-long-enough-for-hs256-tokens", client_id="c", scopes=["system/Patient.rs"], issuer="https://x/fhir",
                        audience="https://x/fhir", now=now, lifetime=300)
    access = verify_token(token, "a-secret-long-enough-for-hs256-tokens", audience="https://x/fhir", now=now)
    assert access.client_id == "c" and access.scopes == frozenset({"system/Patient.rs"})
    for kwargs in ({"secret": "another-secret-long-enough-for-hs256!"}, {"audience": "https://y/fhir"},
                   {"now": now + 301}):
        args = {"secret": "a-secret-long-enough-for-hs256-tokens", "audience": "https://x/fhir", "now": now, **kwargs}
        with pytest.raises(AuthError) as err:
            verify_token(token, str(args["secret"]), audience=str(args["audience"]), now=int(args["now"]))
        assert err.value.error == "invalid_token"
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError):
        verify_token(tampered, "a-secret-long-enough-for-hs256-tokens", audience="https://x/fhir", now=now)
