"""Vital signs: https://hl7.org/fhir/R4/observation-vitalsigns.html.

"If a FHIR Observation resource is used to record one of the vital signs listed in the table, then
it SHALL conform to the profile": an Observation recording a vital sign is validated against that
vital sign's core profile (bodytemp, heartrate, bp, ...) whether or not it declares it — which, among
other things, requires the profile's LOINC code and its UCUM units (``Observation.valueQuantity``).

An Observation records a vital sign when its ``code`` carries the LOINC code the profile fixes
(read from the loaded profiles) or the SNOMED CT concept for the same vital sign; the SNOMED table
is the one the HL7 reference validator uses to recognise them ("validate Observation against the
Body temperature profile ... because the SNOMED CT code 276885007 was found").

Policy: what the profile finds is an error when the Observation says it is a vital sign (category
``vital-signs``, as the profiles require), and a warning otherwise — systems that record heart rates
without categorising them stay writable; the reference validator reports errors in both cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.issues import MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.profile import ProfileContext, ProfileValidator
from fhir_exchange.validation.structure import Visited

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
VITALSIGNS = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# SNOMED CT concept -> the LOINC code of the same vital sign (observation-vitalsigns.html table).
SNOMED_TO_LOINC: dict[str, str] = {
    "46680005": "85353-1",   # vital signs (panel)
    "86290005": "9279-1",    # respiratory rate
    "364075005": "8867-4",   # heart rate
    "103228002": "2708-6",   # oxygen saturation
    "276885007": "8310-5",   # body temperature
    "50373000": "8302-2",    # body height
    "363812007": "9843-4",   # head circumference
    "27113001": "29463-7",   # body weight
    "60621009": "39156-5",   # body mass index
    "75367002": "85354-9",   # blood pressure (panel)
}


def _profiles_by_loinc(defs: Definitions) -> dict[str, tuple[str, str]]:
    """LOINC code -> (profile url, title) of the core vital-sign profiles, from their differentials."""
    out: dict[str, tuple[str, str]] = {}
    for sd in defs.iter("StructureDefinition"):
        if sd.get("baseDefinition") != VITALSIGNS or not isinstance(sd.get("url"), str):
            continue
        system = code = None
        for e in (sd.get("differential") or {}).get("element", []):
            eid = str(e.get("id", ""))
            if not eid.startswith("Observation.code.coding:"):
                continue
            if eid.endswith(".system"):
                system = e.get("fixedUri")
            elif eid.endswith(".code"):
                code = e.get("fixedCode")
        if system == LOINC and isinstance(code, str):
            out[code] = (sd["url"], str(sd.get("title") or sd.get("name") or sd["url"]))
    return out


def vital_sign_profile(obs: dict[str, Any], defs: Definitions) -> tuple[str, str, str] | None:
    """(profile url, title, the code that chose it) for an Observation recording a vital sign."""
    code = obs.get("code")
    if not isinstance(code, dict):
        return None
    table = defs.derived("validation.vitalsigns", lambda: _profiles_by_loinc(defs))
    for c in dicts(code.get("coding")):
        system, value = c.get("system"), c.get("code")
        if not isinstance(value, str):
            continue
        loinc = value if system == LOINC else SNOMED_TO_LOINC.get(value) if system == SNOMED else None
        hit = table.get(loinc) if loinc else None
        if hit is not None:
            label = "LOINC" if system == LOINC else "SNOMED CT"
            return hit[0], hit[1], f"{label} code {value}"
    return None


def check_vital_signs(resources: list[Visited], profiles: ProfileValidator, ctx: ProfileContext,
                      named: Sequence[str]) -> None:
    """Each Observation recording a vital sign against its core profile (unless already named)."""
    outer = ctx.resource
    try:
        for v in resources:
            node = v.node
            if node.get("resourceType") != "Observation":
                continue
            hit = vital_sign_profile(node, profiles.defs)
            if hit is None:
                continue
            url, title, why = hit
            meta = node.get("meta")
            declared = meta.get("profile") if isinstance(meta, dict) else None
            if url in named or (isinstance(declared, list) and url in declared):
                continue  # validated against it already
            sink = ctx.sink
            sink.info("informational", MsgId.VITAL_SIGNS,
                      f"Validated against the {title} profile ({url}), which the FHIR specification requires "
                      f"of an Observation recording a vital sign: the {why} was found", v.path)
            ctx.resource = node
            mark = sink.mark()
            profiles.validate_resource(node, url, v.path, ctx)
            if not _says_vital_sign(node):
                # Not categorised as a vital sign: what the profile finds is reported, not enforced, so
                # systems that do not categorise their observations can still write them.
                for i in sink.truncate(mark):
                    severity = "warning" if i.severity in ("error", "fatal") else i.severity
                    sink.add(severity, i.code, i.message_id or "",
                             f"{i.diagnostics} (the {title} profile, which applies to this code; an error once "
                             "the Observation has the vital-signs category)",
                             i.expression[0] if i.expression else None)
    finally:
        ctx.resource = outer


def _says_vital_sign(obs: dict[str, Any]) -> bool:
    return any(c.get("system") == CATEGORY and c.get("code") == "vital-signs"
               for cat in dicts(obs.get("category")) for c in dicts(cat.get("coding")))
