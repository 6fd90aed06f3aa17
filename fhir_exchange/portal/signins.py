"""AuditEvents of signing in and out of the portal, as IHE Basic Audit Log Patterns records user
authentication (https://profiles.ihe.net/ITI/BALP/, https://hl7.org/fhir/R4/auditevent.html): type DICOM
110114 "User Authentication", subtype 110122 "Login" or 110123 "Logout", outcome 0 or 4 (a refused
sign-in, with the reason: wrong password, locked, disabled). Page views are audited like API requests
(``web.py``); these cover what happens before there is a session, so repeated failures and lockouts
show in the institution's audit trail.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.security.audit import CLIENT_SYSTEM
from fhir_exchange.security.users import User

DICOM = "http://dicom.nema.org/resources/ontology/DCM"


def authentication_event(*, username: str, user: User | None, login: bool, reason: str, address: str | None,
                         recorded: str, server: str) -> dict[str, Any]:
    """The AuditEvent of one sign-in (``login``) or sign-out; ``reason`` is empty when it succeeded."""
    who: dict[str, Any] = {"identifier": {"system": CLIENT_SYSTEM, "value": f"portal:{username}"[:80]}}
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if address:
        agent["network"] = {"address": address, "type": "2"}
    agents = [agent]
    if user is not None:
        who["display"] = user.display
        agents.append({"who": {"reference": f"Organization/{user.institution}"}, "requestor": False,
                       "role": [{"text": "institution of the user"}]})
        agents.append({"who": {"reference": f"PractitionerRole/{user.practitioner_role}"}, "requestor": True})
    agents.append({"type": {"coding": [{"system": DICOM, "code": "110152", "display": "Destination Role ID"}]},
                   "who": {"display": "fhir-exchange portal"}, "requestor": False,
                   "network": {"address": server, "type": "5"}})
    code, display = ("110122", "Login") if login else ("110123", "Logout")
    return {"resourceType": "AuditEvent",
            "type": {"system": DICOM, "code": "110114", "display": "User Authentication"},
            "subtype": [{"system": DICOM, "code": code, "display": display}],
            "action": "E", "recorded": recorded, "outcome": "4" if reason else "0",
            "outcomeDesc": f"{display} refused: {reason}" if reason else display,
            "agent": agents,
            "source": {"observer": {"display": "fhir-exchange"},
                       "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                 "code": "4", "display": "Application Server"}]}}
