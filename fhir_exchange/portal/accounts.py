"""Making portal accounts (what ``fhir-exchange user add`` does), on the store directly, so it works
whether or not a server runs on the same store.

A portal user is a practitioner of a registered institution. Unless an existing PractitionerRole of
the institution is named, the user's Practitioner and PractitionerRole (the consult IG's profile) are
written to the shared directory through the router as the institution itself (so it owns them), then
the account is recorded (:class:`~fhir_exchange.security.users.Users`).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.consult import model
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.interactions.router import Router
from fhir_exchange.portal import resources as build
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.registry import Registry
from fhir_exchange.security.users import AccountError, Users, check_password, normalise_username

SCOPES = frozenset({"system/*.cruds"})


def departments(router: Router) -> dict[str, str]:
    """The HIRA medical department codes (KR Core's CodeSystem) with their display."""
    cs = router.services.definitions.resolve(build.DEPARTMENTS) or {}
    return {str(c["code"]): str(c.get("display", "")) for c in cs.get("concept") or [] if isinstance(c, dict)
            and c.get("code")}


async def add_user(router: Router, registry: Registry, users: Users, *, institution: str, username: str,
                   password: str, name: str | None, practitioner_role: str | None, department: str | None,
                   base_url: str) -> dict[str, Any]:
    svc = router.services
    now = instant(svc.clock.now())
    if await registry.institution(institution, now) is None:
        raise AccountError(f"Organization/{institution} is not a registered institution "
                           "(fhir-exchange institution add)")
    login = normalise_username(username)
    check_password(password)
    if await users.get(login, now) is not None:
        raise AccountError(f"The username {login} is taken")
    actor = Actor(institution=institution, client_id="enrolment", scopes=SCOPES)

    async def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            resp = await router.dispatch(FhirRequest(method, path, body=body, base_url=base_url, actor=actor))
        except FhirError as err:
            raise AccountError(f"{method} {path} was refused: {err.diagnostics}") from None
        return resp.json() or {}

    display = (name or "").strip() or login
    if practitioner_role:
        role = await call("GET", f"PractitionerRole/{practitioner_role}")
        if model.reference(role.get("organization")) != f"Organization/{institution}":
            raise AccountError(f"PractitionerRole/{practitioner_role} is not a role at Organization/{institution}")
        person = model.reference(role.get("practitioner"))
        practitioner = person.split("/", 1)[1] if person and person.startswith("Practitioner/") else None
        if practitioner and not (name or "").strip():
            doc = await call("GET", f"Practitioner/{practitioner}")
            display = next((str(n["text"]) for n in doc.get("name") or [] if n.get("text")), display)
    else:
        known = departments(router)
        if department and department not in known:
            raise AccountError(f"--department: not a HIRA medical department code ({build.DEPARTMENTS}): {department}")
        practitioner, practitioner_role = build.new_id(), build.new_id()
        entries = [build.practitioner(practitioner, institution, login, display),
                   build.practitioner_role(practitioner_role, institution, practitioner, department,
                                           known.get(department or "")) ]
        await call("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}", "resource": r,
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in entries]})
    user = await users.add(username=login, password=password, institution=institution,
                           practitioner_role=practitioner_role, practitioner=practitioner, display=display, now=now)
    return {"username": user.username, "institution": institution, "practitioner_role": practitioner_role,
            "practitioner": practitioner, "name": user.display,
            "portal": f"{base_url.rsplit('/fhir', 1)[0]}/portal/"}
