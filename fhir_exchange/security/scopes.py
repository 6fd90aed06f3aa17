"""SMART App Launch v2 scopes for system clients: https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

A scope ``system/<Type or *>.<permissions>`` grants, on resources of that type, the permissions
``c`` (create), ``r`` (read: read, vread, instance history), ``u`` (update, patch), ``d`` (delete) and
``s`` (search: type and system search, type and system history), written in that order
(``cruds``). SMART v1 forms are read as their v2 equivalents: ``.read`` = ``rs``, ``.write`` = ``cud``,
``.*`` = ``cruds``. Scopes with search parameters (``system/Observation.rs?category=...``) and
``patient/`` or ``user/`` scopes are not granted to system clients: they are dropped from the grant,
never widened.

A token's scopes are what the client asked for, narrowed to what it is allowed
(:func:`grant`): ``asked ∩ allowed`` permission by permission and type by type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PERMISSIONS = "cruds"
_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True, slots=True)
class Scope:
    type: str  # a resource type, or "*"
    permissions: str  # a subsequence of "cruds"

    def __str__(self) -> str:
        return f"system/{self.type}.{self.permissions}"


def parse(scope: str) -> Scope | None:
    """The scope, or None when it is not a system resource scope this server grants."""
    m = _SCOPE.match(scope.strip())
    if m is None:
        return None
    type, perms = m.groups()
    perms = _V1.get(perms, perms)
    if not perms or any(p not in PERMISSIONS for p in perms) or list(perms) != sorted(perms, key=PERMISSIONS.index):
        return None
    return Scope(type, "".join(dict.fromkeys(perms)))


def parse_all(scopes: str | list[str] | tuple[str, ...] | frozenset[str]) -> list[Scope]:
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    return [s for s in (parse(x) for x in items) if s is not None]


def _permissions(scopes: list[Scope], type: str) -> set[str]:
    out: set[str] = set()
    for s in scopes:
        if s.type in ("*", type):
            out.update(s.permissions)
    return out


def permits(scopes: frozenset[str], type: str | None, permission: str) -> bool:
    """Whether ``scopes`` grant ``permission`` (one of c r u d s) on ``type`` (None: on every type)."""
    parsed = parse_all(scopes)
    if type is None:
        return any(s.type == "*" and permission in s.permissions for s in parsed)
    return permission in _permissions(parsed, type)


def readable_types(scopes: frozenset[str]) -> frozenset[str] | None:
    """The types whose resources ``scopes`` let a client read (None: every type)."""
    parsed = parse_all(scopes)
    if any(s.type == "*" and "r" in s.permissions for s in parsed):
        return None
    return frozenset(s.type for s in parsed if "r" in s.permissions)


def grant(asked: str, allowed: frozenset[str]) -> list[str]:
    """The scopes a token carries: each asked scope narrowed to what ``allowed`` permits, permission by
    permission (``system/*.cruds`` asked with ``system/Patient.rs`` allowed gives ``system/Patient.rs``)."""
    allowed_scopes = parse_all(sorted(allowed))
    out: list[str] = []
    for want in parse_all(asked):
        if want.type == "*":
            for have in allowed_scopes:
                perms = "".join(p for p in PERMISSIONS if p in want.permissions and p in have.permissions)
                if perms:
                    out.append(str(Scope(have.type, perms)))
        else:
            have_perms = _permissions(allowed_scopes, want.type)
            perms = "".join(p for p in PERMISSIONS if p in want.permissions and p in have_perms)
            if perms:
                out.append(str(Scope(want.type, perms)))
    return list(dict.fromkeys(out))
