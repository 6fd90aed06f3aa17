"""The consent decision: may the consultant institution see the patient's consult, now? Pure.

A Consent permits it when it is active, is about the consult's patient, its permit provision has the
purpose TREAT (v3-ActReason), names the consultant (an actor with role IRCP: the consultant
Organization, or one of its PractitionerRoles or HealthcareServices) and its period contains now
(IHE PCF; R4 ppc-1, ppc-2). The decision says until when (the period's end), or why not. A nested
``deny`` provision withholds what it covers (:func:`denied`): resources of its ``class`` types or
carrying one of its ``securityLabel`` codes, while its period (if any) lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.consult import model
from fhir_exchange.search.params.date import parse_range


@dataclass(frozen=True, slots=True)
class Decision:
    permitted: bool
    reason: str  # why not, or "consent <id>"
    rule: str  # the rule id a refusal names
    until: str | None = None  # FHIR instant the permission ends


def micros(value: str) -> tuple[int, int] | None:
    return parse_range(value)


def to_instant(us: int) -> str:
    return instant(datetime.fromtimestamp(us / 1_000_000, UTC))


def now_micros(now: str) -> int:
    r = parse_range(now)
    if r is None:
        raise ValueError(f"not an instant: {now}")
    return r[0]


def decide(consent: dict[str, Any] | None, *, patient: str | None, recipients: set[str], now: str) -> Decision:
    """``recipients``: the references that stand for the consultant (``Organization/x`` and its
    PractitionerRoles/HealthcareServices the caller resolved)."""
    if consent is None:
        return Decision(False, "the Consent does not exist", "cw-consent-exists")
    cid = consent.get("id")
    if consent.get("status") != "active":
        return Decision(False, f"Consent/{cid} is {consent.get('status')}, not active", "cw-consent-active")
    if patient is None or model.reference(consent.get("patient")) != patient:
        return Decision(False, f"Consent/{cid} is about another patient than {patient}", "cw-consent-patient")
    provision: dict[str, Any] = consent["provision"] if isinstance(consent.get("provision"), dict) else {}
    if provision.get("type") != "permit":
        return Decision(False, f"Consent/{cid} does not permit (provision.type)", "cw-consent-permit")
    if "TREAT" not in model.consent_purposes(consent):
        return Decision(False, f"Consent/{cid} does not permit treatment (purpose TREAT)", "cw-consent-purpose")
    if not recipients & set(model.consent_recipients(consent)):
        return Decision(False, f"Consent/{cid} does not name the consultant as recipient (IRCP)",
                        "cw-consent-recipient")
    start, end = model.period(provision.get("period"))
    at = now_micros(now)
    low = micros(start) if start else None
    high = micros(end) if end else None
    if low is not None and at < low[0]:
        return Decision(False, f"Consent/{cid} applies from {start}", "cw-consent-period")
    if high is not None and at >= high[1]:
        return Decision(False, f"Consent/{cid} ended on {end}", "cw-consent-period")
    return Decision(True, f"Consent/{cid}", "", to_instant(high[1]) if high is not None else None)


def denied(consent: dict[str, Any], resource: dict[str, Any], now: str) -> tuple[bool, str | None]:
    """(withheld now, or the instant from which it will be): a deny provision covering ``resource``."""
    at = now_micros(now)
    rtype = str(resource.get("resourceType"))
    labels = model.security_labels(resource)
    starts: list[int] = []
    for deny in model.deny_provisions(consent):
        classes, deny_labels = model.deny_classes(deny), model.deny_labels(deny)
        if not classes and not deny_labels:
            continue
        if classes and rtype not in classes:
            continue
        if deny_labels and not labels & deny_labels:
            continue
        start, end = model.period(deny.get("period"))
        start_range = micros(start) if start else None
        end_range = micros(end) if end else None
        low = start_range[0] if start_range else None
        high = end_range[1] if end_range else None
        if high is not None and at >= high:
            continue  # that denial is over
        if low is not None and at < low:
            starts.append(low)
            continue
        return True, None
    return False, (to_instant(min(starts)) if starts else None)


def in_period(start: str | None, end: str | None, now: str) -> bool:
    """Whether the instant ``now`` lies within a FHIR Period (dates or dateTimes with any offset, each
    at its precision: an end date lasts the whole day)."""
    at = now_micros(now)
    low = micros(start) if start else None
    high = micros(end) if end else None
    return (low is None or at >= low[0]) and (high is None or at < high[1])
