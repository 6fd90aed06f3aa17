"""Portal accounts and their sessions, kept as records of the store (like the registry: never FHIR
resources, so no client of the API can read or change them; every process on the store and the
command line see the same accounts at once).

- A **user** is a practitioner of one registered institution who signs in to the portal with a
  password. The account names the PractitionerRole the user acts as (written to the shared directory
  when the account was made), so every request a portal page makes carries the institution, the
  practitioner and the account (``client_id`` ``portal:<username>``). Usernames are unique across the
  exchange (lower case letters, digits and ``._@-``).
- Passwords are hashed with Argon2id (argon2-cffi's defaults, the RFC 9106 "second recommended"
  parameters); a hash made with older parameters is upgraded at the next successful sign-in. An
  unknown username costs the same hashing work as a wrong password.
- **Lockout**: after ``max_failures`` consecutive wrong passwords the account is locked for
  ``lock_seconds`` (a correct password is refused while it is locked); ``fhir-exchange user unlock``
  ends it early. A successful sign-in clears the count.
- A **session** is a random token (the cookie's value) whose SHA-256 keys a record holding the
  username and the session's CSRF token, expiring after the session lifetime; signing out deletes it,
  and the account is read again on every request, so disabling it ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from fhir_exchange.clock import instant
from fhir_exchange.store.port import Record, ResourceStore

USER = "user"
SESSION = "portal-session"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
MIN_PASSWORD = 8


class AccountError(ValueError):
    """An account that cannot be made or changed: the message says why."""


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise AccountError("A username is 2 to 64 characters: lower case letters, digits and . _ @ -, "
                           f"not {username!r}")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"A password has at least {MIN_PASSWORD} characters")


@dataclass(frozen=True, slots=True)
class User:
    username: str
    institution: str  # Organization id
    practitioner_role: str  # PractitionerRole id: who the user acts as
    practitioner: str | None
    display: str
    password_hash: str
    failures: int = 0
    locked_until: str | None = None  # FHIR instant
    disabled: bool = False
    created: str = ""

    def public(self) -> dict[str, object]:
        """What the command line shows (never the hash)."""
        return {k: v for k, v in asdict(self).items() if k != "password_hash"}


@dataclass(frozen=True, slots=True)
class Session:
    token: str  # the cookie's value (only its hash is stored)
    username: str
    csrf: str
    created: str
    expires: str


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of a sign-in: ``user`` when it succeeded, else the reason (unknown, wrong, locked,
    disabled: the page says the same for unknown and wrong)."""

    user: User | None
    reason: str = ""
    locked_until: str | None = None


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, store: ResourceStore, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    # -- accounts --------------------------------------------------------------------------------

    async def get(self, username: str, now: str) -> User | None:
        try:
            name = normalise_username(username)
        except AccountError:
            return None
        record = await self.store.get_record(USER, name, now=now)
        return None if record is None else User(**orjson.loads(record.value))

    async def list(self, now: str) -> list[User]:
        return [User(**orjson.loads(r.value)) for r in await self.store.list_records(USER, now=now)]

    async def add(self, *, username: str, password: str, institution: str, practitioner_role: str,
                  practitioner: str | None, display: str, now: str) -> User:
        name = normalise_username(username)
        check_password(password)
        user = User(name, institution, practitioner_role, practitioner, display.strip() or name,
                    self.hasher.hash(password), created=now)
        if not await self.store.put_record(Record(USER, name, orjson.dumps(asdict(user))), if_absent=True):
            raise AccountError(f"The username {name} is taken")
        return user

    async def save(self, user: User) -> None:
        await self.store.put_record(Record(USER, user.username, orjson.dumps(asdict(user))))

    async def set_password(self, username: str, password: str, now: str) -> User:
        check_password(password)
        user = await self._existing(username, now)
        updated = replace(user, password_hash=self.hasher.hash(password), failures=0, locked_until=None)
        await self.save(updated)
        return updated

    async def unlock(self, username: str, now: str) -> User:
        user = await self._existing(username, now)
        updated = replace(user, failures=0, locked_until=None)
        await self.save(updated)
        return updated

    async def set_disabled(self, username: str, disabled: bool, now: str) -> User:
        user = await self._existing(username, now)
        updated = replace(user, disabled=disabled)
        await self.save(updated)
        return updated

    async def _existing(self, username: str, now: str) -> User:
        user = await self.get(username, now)
        if user is None:
            raise AccountError(f"No portal user {username!r}")
        return user

    # -- signing in ------------------------------------------------------------------------------

    async def sign_in(self, username: str, password: str, at: datetime, *, max_failures: int,
                      lock_seconds: int) -> SignIn:
        now = instant(at)
        user = await self.get(username, now)
        if user is None:
            self._verify(self._dummy_hash(), password)  # the same work as a wrong password
            return SignIn(None, "unknown")
        if user.locked_until and user.locked_until > now:
            return SignIn(None, "locked", user.locked_until)
        if not self._verify(user.password_hash, password):
            failures = user.failures + 1
            if max_failures > 0 and failures >= max_failures:
                until = instant(at + timedelta(seconds=lock_seconds))
                await self.save(replace(user, failures=0, locked_until=until))
                return SignIn(None, "locked", until)
            await self.save(replace(user, failures=failures, locked_until=None))
            return SignIn(None, "wrong")
        if user.disabled:
            return SignIn(None, "disabled")
        updated = replace(user, failures=0, locked_until=None)
        if self.hasher.check_needs_rehash(user.password_hash):
            updated = replace(updated, password_hash=self.hasher.hash(password))
        if updated != user:
            await self.save(updated)
        return SignIn(updated)

    def _verify(self, hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    # -- sessions --------------------------------------------------------------------------------

    async def open_session(self, user: User, at: datetime, lifetime: int) -> Session:
        now = instant(at)
        await self.store.purge_records(now)  # expired sessions (and other expired records) go
        session = Session(secrets.token_urlsafe(32), user.username, secrets.token_urlsafe(32), now,
                          instant(at + timedelta(seconds=lifetime)))
        value = orjson.dumps({"username": session.username, "csrf": session.csrf, "created": session.created})
        await self.store.put_record(Record(SESSION, _key(session.token), value, session.expires))
        return session

    async def session(self, token: str, now: str) -> Session | None:
        if not token or len(token) > 200:
            return None
        record = await self.store.get_record(SESSION, _key(token), now=now)
        if record is None:
            return None
        data = orjson.loads(record.value)
        return Session(token, data["username"], data["csrf"], data["created"], record.expires or "")

    async def close_session(self, token: str) -> None:
        if token and len(token) <= 200:
            await self.store.delete_record(SESSION, _key(token))
