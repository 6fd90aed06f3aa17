"""Portal accounts on a real SQLite store: Argon2id hashes, the username and password rules, lockout
and its end, disabled accounts, sessions that expire and end at sign-out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from fhir_exchange.clock import instant
from fhir_exchange.security.users import AccountError, Users, check_password, normalise_username
from fhir_exchange.store import open_store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NOW = instant(T0)


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[Users]:
    store = open_store(f"sqlite:///{tmp_path / 'fhir.db'}")
    await store.open()
    try:
        # Cheap hashing parameters keep the test fast; the rehash test checks the upgrade to the defaults.
        yield Users(store, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    finally:
        await store.close()


async def add(users: Users, name: str = "kim.hub", password: str = "a long passphrase") -> None:
    await users.add(username=name, password=password, institution="org-1", practitioner_role="role-1",
                    practitioner="p-1", display="김의사", now=NOW)


def test_username_and_password_rules() -> None:
    assert normalise_username("  Kim.Hub@Ward-3 ") == "kim.hub@ward-3"
    for bad in ("a", "Bad Name", "x" * 65, "-leading", "kim/hub"):
        with pytest.raises(AccountError):
            normalise_username(bad)
    with pytest.raises(AccountError, match="at least 8"):
        check_password("1234567")
    check_password("12345678")


async def test_passwords_are_argon2id_hashes_never_stored_plain(users: Users) -> None:
    await add(users)
    user = await users.get("KIM.HUB", NOW)
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert "a long passphrase" not in user.password_hash
    assert "password_hash" not in user.public()
    with pytest.raises(AccountError, match="taken"):
        await add(users)


async def test_sign_in_and_a_hash_upgraded_to_current_parameters(users: Users) -> None:
    await add(users)
    strong = Users(users.store)  # argon2-cffi's defaults: the stored cheap hash needs a rehash
    result = await strong.sign_in("kim.hub", "a long passphrase", T0, max_failures=5, lock_seconds=60)
    assert result.user is not None
    stored = await strong.get("kim.hub", NOW)
    assert stored is not None and not strong.hasher.check_needs_rehash(stored.password_hash)
    assert (await strong.sign_in("nobody", "whatever", T0, max_failures=5, lock_seconds=60)).reason == "unknown"


async def test_lockout_after_consecutive_failures_ends_by_time_or_unlock(users: Users) -> None:
    await add(users)
    reasons = [(await users.sign_in("kim.hub", "wrong", T0, max_failures=3, lock_seconds=600)).reason
               for _ in range(3)]
    assert reasons == ["wrong", "wrong", "locked"]
    locked = await users.sign_in("kim.hub", "a long passphrase", T0 + timedelta(seconds=599), max_failures=3,
                                 lock_seconds=600)
    assert locked.user is None and locked.reason == "locked"
    later = await users.sign_in("kim.hub", "a long passphrase", T0 + timedelta(seconds=601), max_failures=3,
                                lock_seconds=600)
    assert later.user is not None and later.user.failures == 0
    for _ in range(3):
        await users.sign_in("kim.hub", "wrong", T0, max_failures=3, lock_seconds=600)
    await users.unlock("kim.hub", NOW)
    assert (await users.sign_in("kim.hub", "a long passphrase", T0, max_failures=3, lock_seconds=600)).user


async def test_a_success_clears_the_failure_count(users: Users) -> None:
    await add(users)
    for _ in range(2):
        await users.sign_in("kim.hub", "wrong", T0, max_failures=3, lock_seconds=600)
    assert (await users.sign_in("kim.hub", "a long passphrase", T0, max_failures=3, lock_seconds=600)).user
    for _ in range(2):
        await users.sign_in("kim.hub", "wrong", T0, max_failures=3, lock_seconds=600)
    assert (await users.sign_in("kim.hub", "a long passphrase", T0, max_failures=3, lock_seconds=600)).user


async def test_disabled_accounts_cannot_sign_in(users: Users) -> None:
    await add(users)
    await users.set_disabled("kim.hub", True, NOW)
    result = await users.sign_in("kim.hub", "a long passphrase", T0, max_failures=3, lock_seconds=600)
    assert result.user is None and result.reason == "disabled"


async def test_sessions_expire_and_end_at_sign_out(users: Users) -> None:
    await add(users)
    user = await users.get("kim.hub", NOW)
    assert user is not None
    session = await users.open_session(user, T0, 3600)
    found = await users.session(session.token, instant(T0 + timedelta(seconds=3599)))
    assert found is not None and found.username == "kim.hub" and found.csrf == session.csrf
    assert await users.session(session.token, instant(T0 + timedelta(seconds=3601))) is None
    assert await users.session("not-a-token", NOW) is None
    await users.close_session(session.token)
    assert await users.session(session.token, NOW) is None
    # Only the token's hash is stored: the record's key is not the cookie's value.
    assert await users.store.get_record("portal-session", session.token, now=NOW) is None
