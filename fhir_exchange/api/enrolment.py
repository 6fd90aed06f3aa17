"""Enrolment of institutions and system clients (what ``fhir-exchange institution add`` and
``client add`` do), on the store directly, so it works whether or not a server runs on the same store.

An institution is registered as an Organization (KR Core healthcare organization with its HIRA
identifier, the consult IG's profile) and an Endpoint saying how it connects (portal, EMR over a
private link, exchange system), written through the router as the new institution itself (so it
owns them), plus a registry record. A client gets a random id, its JWKS (public keys only), the
scopes it may be granted, and optionally a client-certificate subject and admin rights.

A network (what ``fhir-exchange network add`` does) is an OrganizationAffiliation: the hub
(``organization``) takes consults from a partner (``participatingOrganization``), for the departments
in ``specialty`` (all of them when there is none), from today on. It is written through the router as
the hub (so the hub owns it: only the hub ends or changes it); the consult workflow's rule cw-network
reads it when the partner requests a consult from the hub.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.interactions.router import Router
from fhir_exchange.security import scopes as smart
from fhir_exchange.security.actor import Actor
from fhir_exchange.security.registry import CONNECTIONS, Client, Institution, Registry, normalise_subject
from fhir_exchange.security.tokens import parse_jwks

HIRA = "http://www.hl7korea.or.kr/Identifier/hira-krnpi"
PROFILE = "http://fhir-exchange.org/fhir/StructureDefinition/"
STYLE = f"{PROFILE}consult-connection-style"
DEFAULT_SCOPES = ("system/*.cruds",)
DEPARTMENTS = "http://www.hl7korea.or.kr/CodeSystem/hira-medical-department"
NETWORK_PROFILE = f"{PROFILE}consult-network"


class EnrolmentError(ValueError):
    """A registration that cannot be made: the message says why."""


def normalise_hira(hira_id: str) -> str:
    """HIRA institution identifiers (요양기관기호) are 8 digits; separators and spaces are dropped."""
    digits = re.sub(r"[\s\-.]", "", hira_id)
    if not re.fullmatch(r"[0-9]{8}", digits):
        raise EnrolmentError(f"A HIRA institution identifier is 8 digits, not {hira_id!r}")
    return digits


async def add_institution(router: Router, registry: Registry, *, name: str, hira_id: str, connection: str,
                          endpoint_address: str | None, base_url: str) -> dict[str, Any]:
    if connection not in CONNECTIONS:
        raise EnrolmentError(f"--connection is one of {', '.join(CONNECTIONS)}, not {connection!r}")
    if not name.strip():
        raise EnrolmentError("An institution needs a name")
    hira = normalise_hira(hira_id)
    svc = router.services
    now = instant(svc.clock.now())
    for known in await registry.institutions(now):
        if known.hira_id == hira:
            raise EnrolmentError(f"HIRA identifier {hira} is already registered as Organization/{known.organization}")
    org_id, endpoint_id = svc.clock.new_id(), svc.clock.new_id()
    style = CONNECTIONS[connection]
    if endpoint_address is None:
        endpoint_address = {"portal": f"{base_url.rsplit('/fhir', 1)[0]}/portal",
                            "vpn-emr": f"https://emr-{hira}.invalid/fhir",
                            "exchange-system": f"https://hie-{hira}.invalid/fhir"}[style]
    organization = {"resourceType": "Organization", "id": org_id,
                    "meta": {"profile": [f"{PROFILE}consult-organization"]},
                    "identifier": [{"system": HIRA, "value": hira}], "active": True, "name": name.strip(),
                    "endpoint": [{"reference": f"Endpoint/{endpoint_id}"}]}
    endpoint = {"resourceType": "Endpoint", "id": endpoint_id, "meta": {"profile": [f"{PROFILE}consult-endpoint"]},
                "extension": [{"url": STYLE, "valueCode": style}], "status": "active",
                "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                   "code": "hl7-fhir-msg" if style == "exchange-system" else "hl7-fhir-rest"},
                "name": f"{name.strip()} ({style})", "managingOrganization": {"reference": f"Organization/{org_id}"},
                "payloadType": [{"coding": [{"system": "http://hl7.org/fhir/resource-types", "code": "Bundle"}]}],
                "payloadMimeType": ["application/fhir+json"], "address": endpoint_address}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": organization, "request": {"method": "PUT", "url": f"Organization/{org_id}"}},
        {"resource": endpoint, "request": {"method": "PUT", "url": f"Endpoint/{endpoint_id}"}}]}
    # Written as the new institution itself, so that it owns its directory entries.
    actor = Actor(institution=org_id, client_id="enrolment", scopes=frozenset(DEFAULT_SCOPES))
    try:
        await router.dispatch(FhirRequest("POST", "", body=bundle, base_url=base_url, actor=actor))
    except FhirError as err:
        raise EnrolmentError(f"The institution's resources were refused: {err.diagnostics}") from None
    await registry.add_institution(Institution(org_id, name.strip(), hira, connection, endpoint_id))
    return {"organization": org_id, "endpoint": endpoint_id, "hira_id": hira, "connection": connection}


async def add_client(registry: Registry, *, institution: str, jwks: Any, scopes: list[str], admin: bool,
                     cert_subject: str | None, token_endpoint: str, now: str) -> dict[str, Any]:
    if await registry.institution(institution, now) is None:
        raise EnrolmentError(f"Organization/{institution} is not a registered institution "
                             "(fhir-exchange institution add)")
    if jwks is None and not cert_subject:
        raise EnrolmentError("A client authenticates with a JWKS (--jwks) or a client certificate (--cert-subject)")
    if jwks is not None:
        try:
            parse_jwks(jwks)
        except ValueError as exc:
            raise EnrolmentError(f"--jwks: {exc}") from None
    allowed = scopes or list(DEFAULT_SCOPES)
    bad = [s for s in allowed if smart.parse(s) is None]
    if bad:
        raise EnrolmentError(f"Not SMART v2 system scopes: {', '.join(bad)} (e.g. system/Patient.rs, system/*.cruds)")
    client = Client(client_id=f"client-{secrets.token_hex(8)}", institution=institution, jwks=jwks,
                    scopes=tuple(allowed), admin=admin,
                    cert_subject=normalise_subject(cert_subject) if cert_subject else None, created=now)
    await registry.add_client(client)
    return {"client_id": client.client_id, "token_endpoint": token_endpoint, "institution": institution,
            "scopes": list(client.scopes), "admin": admin}


def departments(router: Router) -> dict[str, str]:
    """The HIRA medical department codes (KR Core's CodeSystem) with their display."""
    cs = router.services.definitions.resolve(DEPARTMENTS) or {}
    return {str(c["code"]): str(c.get("display", "")) for c in cs.get("concept") or [] if isinstance(c, dict)
            and c.get("code")}


async def add_network(router: Router, registry: Registry, *, hub: str, partner: str, specialties: list[str],
                      base_url: str) -> dict[str, Any]:
    """Affiliate ``partner`` with ``hub`` (Organization ids of registered institutions): an active
    OrganizationAffiliation from today (the UTC date, as the workflow compares it with UTC instants),
    written as the hub."""
    svc = router.services
    now = instant(svc.clock.now())
    for role, org in (("--hub", hub), ("--partner", partner)):
        if await registry.institution(org, now) is None:
            raise EnrolmentError(f"{role}: Organization/{org} is not a registered institution "
                                 "(fhir-exchange institution add)")
    if hub == partner:
        raise EnrolmentError("An institution is not its own partner: --hub and --partner differ")
    known = departments(router)
    unknown = [code for code in specialties if code not in known]
    if unknown:
        raise EnrolmentError(f"--specialty: not HIRA medical department codes ({DEPARTMENTS}): {', '.join(unknown)}")
    aff_id = svc.clock.new_id()
    affiliation: dict[str, Any] = {
        "resourceType": "OrganizationAffiliation", "id": aff_id, "active": True, "period": {"start": now[:10]},
        "organization": {"reference": f"Organization/{hub}"},
        "participatingOrganization": {"reference": f"Organization/{partner}"}}
    if svc.definitions.resolve(NETWORK_PROFILE) is not None:
        affiliation["meta"] = {"profile": [NETWORK_PROFILE]}
    if specialties:
        affiliation["specialty"] = [{"coding": [{"system": DEPARTMENTS, "code": code, "display": known[code]}]}
                                    for code in dict.fromkeys(specialties)]
    actor = Actor(institution=hub, client_id="enrolment", scopes=frozenset(DEFAULT_SCOPES))
    try:
        await router.dispatch(FhirRequest("PUT", f"OrganizationAffiliation/{aff_id}", body=affiliation,
                                          base_url=base_url, actor=actor))
    except FhirError as err:
        raise EnrolmentError(f"The affiliation was refused: {err.diagnostics}") from None
    return {"affiliation": aff_id, "hub": hub, "partner": partner, "specialties": list(dict.fromkeys(specialties)),
            "start": now[:10]}
