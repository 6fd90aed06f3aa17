"""Terminology operations: https://hl7.org/fhir/R4/terminology-service.html

- ``ValueSet/$expand`` (valueset-operation-expand.html): ``[id]/$expand``, ``?url=`` (+``valueSetVersion``)
  or a ``valueSet`` resource; ``filter`` (word prefixes of code and display, case-insensitive),
  ``count``/``offset`` (paging a pick-list; ``expansion.total`` is the filtered total), ``displayLanguage``
  (designations), ``includeDesignations``.
- ``CodeSystem/$lookup`` (codesystem-operation-lookup.html): ``system``+``code`` or ``coding``; name,
  version, display, designations and properties (``parent``/``child`` from the hierarchy too).
- ``ValueSet/$validate-code`` and ``CodeSystem/$validate-code`` (valueset-operation-validate-code.html,
  codesystem-operation-validate-code.html): ``code``+``system``(+``display``), ``coding`` or
  ``codeableConcept``; ``result``, ``message``, ``display``. A display that is neither the concept's
  display nor one of its designations makes the result false.
- ``CodeSystem/$subsumes`` (codesystem-operation-subsumes.html) and ``ConceptMap/$translate``
  (:mod:`fhir_exchange.interactions.translate`).

They read the loaded definitions only (the core package, KR Core, the consult IG and the conformance
resources written to the server: the shared directory), so they need what a read of their type needs
(``r``). Errors: an unknown ValueSet/CodeSystem/ConceptMap is a 404; missing or contradictory input a
400; an expansion beyond ``FHIR_EXCHANGE_MAX_EXPANSION`` concepts without ``count`` is a 422
``too-costly``; a ValueSet or CodeSystem whose members cannot be known here (SNOMED CT, LOINC, KCD-8:
no complete CodeSystem loaded) is a 422 ``not-supported`` naming the system.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.errors import Category, FhirError, invalid, not_found
from fhir_exchange.interactions.operations import Operation, OperationRegistry
from fhir_exchange.interactions.parameters import OperationParameters, one_of, operand
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.translate import translate
from fhir_exchange.validation.picklist import Concept, Prepared, TerminologyService, service
from fhir_exchange.validation.terminology import GRAMMAR_SYSTEMS, CodeSystemIndex, Expansion

_OD = "http://hl7.org/fhir/OperationDefinition/"


def _not_supported(message: str) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, message, code="not-supported")


def _check_enumerable(exp: Expansion, vs: dict[str, Any]) -> None:
    label = vs.get("url") or vs.get("id")
    if exp.open_systems:
        raise _not_supported(f"The ValueSet {label} includes codes of {', '.join(sorted(exp.open_systems))}, which "
                             f"this server cannot enumerate (no complete CodeSystem is loaded for it)")
    if exp.all_open:
        why = "; ".join(exp.problems) or "its stored expansion is partial and it has no compose"
        raise _not_supported(f"The ValueSet {label} cannot be enumerated on this server: {why}")


def _language(p: OperationParameters, req: FhirRequest) -> str | None:
    """``displayLanguage``, else the first language of ``Accept-Language`` (as terminology servers do)."""
    explicit = p.string("displayLanguage")
    if explicit is not None:
        return explicit
    first = (req.header("accept-language") or "").split(",")[0].split(";")[0].strip()
    return first if first and first != "*" else None


def _service(repo: Repository) -> TerminologyService:
    return service(repo.svc.definitions)


# -- $expand ---------------------------------------------------------------------------------------

async def expand(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    p = OperationParameters(req, "expand")
    vs, cacheable = operand(repo, p, "ValueSet", id, "valueSet", "url", "valueSetVersion")
    if vs is None:
        raise invalid("$expand needs a ValueSet: ValueSet/[id]/$expand, the 'url' parameter or a 'valueSet' resource",
                      "url")
    filter_text = p.string("filter")
    language = _language(p, req)
    offset = p.integer("offset") or 0
    count = p.integer("count")
    designations = p.boolean("includeDesignations")
    prepared = _service(repo).prepare(vs, cache=cacheable)
    _check_enumerable(prepared.expansion, vs)
    matches = prepared.pick_list(language).search(filter_text)
    limit = repo.svc.settings.max_expansion
    if count is None and len(matches) > limit:
        raise FhirError(Category.UNPROCESSABLE, f"The expansion of {vs.get('url') or vs.get('id')} has {len(matches)} "
                        f"concepts, more than {limit} (FHIR_EXCHANGE_MAX_EXPANSION): page it with count and offset "
                        f"or narrow it with filter", code="too-costly")
    page = matches[offset:offset + min(limit, count if count is not None else len(matches))]
    echo: list[dict[str, Any]] = []
    if filter_text is not None:
        echo.append({"name": "filter", "valueString": filter_text})
    if count is not None:
        echo.append({"name": "count", "valueInteger": count})
    if offset:
        echo.append({"name": "offset", "valueInteger": offset})
    if language is not None:
        echo.append({"name": "displayLanguage", "valueCode": language})
    if designations:
        echo.append({"name": "includeDesignations", "valueBoolean": True})
    echo += [{"name": "used-codesystem", "valueUri": f"{s}|{cs.version}" if (cs := _used(repo, s)) else s}
             for s in prepared.expansion.codes]
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{repo.svc.clock.new_id()}", "timestamp": instant(repo.svc.clock.now()),
        "total": len(matches), "offset": offset,
    }
    if echo:  # FHIR JSON has no empty arrays
        expansion["parameter"] = echo
    if page:
        expansion["contains"] = [_contains(c, designations) for c in page]
    out: dict[str, Any] = {"resourceType": "ValueSet"}
    for key in ("id", "url", "version", "name", "title", "status"):
        if vs.get(key) is not None:
            out[key] = vs[key]
    out.setdefault("status", "active")
    out["expansion"] = expansion
    return FhirResponse(200, resource=out)


def _used(repo: Repository, system: str) -> CodeSystemIndex | None:
    cs = _service(repo).code_system(system)
    return cs if cs is not None and cs.version else None


def _contains(c: Concept, designations: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"system": c.system}
    if c.version:
        out["version"] = c.version
    out["code"] = c.code
    if c.display:
        out["display"] = c.display
    if designations and c.designations:
        out["designation"] = list(c.designations)
    return out


# -- $validate-code --------------------------------------------------------------------------------

def _codings(p: OperationParameters, op: str, system_param: str = "system") -> list[dict[str, Any]]:
    one_of(p, op, "code", "coding", "codeableConcept")
    if p.has("code"):
        code = p.string("code")
        if code is None:
            raise invalid(f"${op}: the code is empty", "code")
        given = {"system": p.string(system_param), "code": code, "display": p.string("display")}
        return [{k: v for k, v in given.items() if v is not None}]
    coding = p.coding("coding")
    if coding is not None:
        if p.has("display") and "display" not in coding:
            coding["display"] = p.string("display")
        return [coding]
    codings = p.codings("codeableConcept")
    if codings is None:
        raise invalid(f"${op} needs a code: 'code' (with 'system'), 'coding' or 'codeableConcept'", "code")
    return codings


def _result(valid: bool, message: str, display: str | None) -> FhirResponse:
    params: list[dict[str, Any]] = [{"name": "result", "valueBoolean": valid}]
    if message:
        params.append({"name": "message", "valueString": message})
    if display:
        params.append({"name": "display", "valueString": display})
    return FhirResponse(200, resource={"resourceType": "Parameters", "parameter": params})


def _in_value_set(svc: TerminologyService, prepared: Prepared, vs_label: str, coding: dict[str, Any]
                  ) -> tuple[bool | None, str, str | None]:
    system, code, display = coding.get("system"), str(coding["code"]), coding.get("display")
    label = f"{system}#{code}" if system else code
    verdict = prepared.expansion.contains(system, code)
    if verdict is None:
        return None, f"The code {label} cannot be checked against {vs_label}: its code system is not available " \
                     f"on this server", None
    if not verdict:
        cs = svc.code_system(system) if system else None
        if cs is not None and cs.complete and not cs.has(code):
            return False, f"Unknown code {label}: not in the code system {system}", None
        return False, f"The code {label} is not in the value set {vs_label}", None
    shown, acceptable = prepared.display_of(system, code)
    if display and acceptable and display not in acceptable:
        return False, f"The display '{display}' is not a display of {label}: it should be '{shown}'", shown
    return True, "", shown


async def validate_code(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    if type == "CodeSystem":
        return await _validate_in_code_system(repo, req, id)
    p = OperationParameters(req, "validate-code")
    vs, cacheable = operand(repo, p, "ValueSet", id, "valueSet", "url", "valueSetVersion")
    if vs is None:
        raise invalid("$validate-code needs a ValueSet: ValueSet/[id]/$validate-code, the 'url' parameter or a "
                      "'valueSet' resource", "url")
    codings = _codings(p, "validate-code")
    svc = _service(repo)
    prepared = svc.prepare(vs, cache=cacheable)
    label = str(vs.get("url") or f"ValueSet/{vs.get('id')}")
    checks = [_in_value_set(svc, prepared, label, c) for c in codings]
    for verdict, message, display in checks:
        if verdict:
            return _result(True, message, display)
    if all(v is None for v, _m, _d in checks):
        raise _not_supported(checks[0][1])
    return _result(False, "; ".join(m for v, m, _d in checks if m), next((d for _v, _m, d in checks if d), None))


async def _validate_in_code_system(repo: Repository, req: FhirRequest, id: str | None) -> FhirResponse:
    p = OperationParameters(req, "validate-code")
    cs_res, cacheable = operand(repo, p, "CodeSystem", id, "codeSystem", "url", "version")
    codings = _codings(p, "validate-code", "url")
    url: str | None = cs_res.get("url") if cs_res is not None else None
    systems = {str(c["system"]) for c in codings if c.get("system")}
    if cs_res is None:
        if len(systems) != 1:
            raise invalid("$validate-code needs the CodeSystem: CodeSystem/[id]/$validate-code, 'url', "
                          "'codeSystem' or a coding with its system", "url")
        url = systems.pop()
        cs_res = _resolve_code_system(repo, url, p.string("version"))
    elif url is not None and systems - {url}:
        raise invalid(f"The coding's system {', '.join(sorted(systems - {url}))} is not the CodeSystem {url}", "coding")
    cs = _service(repo).index(cs_res, cache=cacheable)
    messages: list[str] = []
    for coding in codings:
        code, display = str(coding["code"]), coding.get("display")
        known = cs.canonical(code)
        if known is None:
            if not cs.complete:
                raise _not_supported(f"The CodeSystem {url} holds only part of its codes (content = {cs.content}): "
                                     f"whether {code} exists cannot be said here")
            messages.append(f"Unknown code {url}#{code}: not in the code system")
            continue
        shown = cs.display(known)
        acceptable = {shown} | {d.get("value") for d in cs.designations.get(known, [])} - {None}
        if display and acceptable and display not in acceptable:
            return _result(False, f"The display '{display}' is not a display of {url}#{known}: it should be "
                                  f"'{shown}'", shown)
        return _result(True, "", shown)
    return _result(False, "; ".join(messages), None)


def _resolve_code_system(repo: Repository, system: str, version: str | None) -> dict[str, Any]:
    if system in GRAMMAR_SYSTEMS:
        raise _not_supported(f"The code system {system} is not available on this server")
    canonical = f"{system}|{version}" if version else system
    found = repo.svc.definitions.resolve(canonical)
    if found is None or found.get("resourceType") != "CodeSystem":
        raise not_found(f"CodeSystem {canonical} is not known to this server")
    return found


# -- $lookup ---------------------------------------------------------------------------------------

async def lookup(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    p = OperationParameters(req, "lookup")
    one_of(p, "lookup", "code", "coding")
    coding = p.coding("coding") or {"system": p.string("system"), "code": p.string("code"),
                                    "version": p.string("version")}
    system, code = coding.get("system"), coding.get("code")
    if not code or not system:
        raise invalid("$lookup needs 'system' and 'code', or a 'coding' with both", "code" if not code else "system")
    cs_res = _resolve_code_system(repo, system, coding.get("version") or p.string("version"))
    cs = _service(repo).index(cs_res)
    known = cs.canonical(code)
    if known is None:
        if not cs.complete:
            raise _not_supported(f"The CodeSystem {system} holds only part of its codes (content = {cs.content}): "
                                 f"{code} is not among them")
        raise not_found(f"Unknown code {system}#{code}: not in the code system")
    language = _language(p, req)
    display = (cs.designation(known, language) if language else None) or cs.display(known) or known
    wanted = set(p.strings("property"))
    out: list[dict[str, Any]] = [{"name": "name", "valueString": cs.name}]
    if cs.version:
        out.append({"name": "version", "valueString": cs.version})
    out.append({"name": "display", "valueString": display})
    for d in cs.designations.get(known, []):
        part: list[dict[str, Any]] = []
        if d.get("language"):
            part.append({"name": "language", "valueCode": d["language"]})
        if d.get("use"):
            part.append({"name": "use", "valueCoding": d["use"]})
        part.append({"name": "value", "valueString": d.get("value", "")})
        out.append({"name": "designation", "part": part})
    props: list[tuple[str, str, Any]] = []
    for prop in cs.raw_properties.get(known, []):
        value = next(((k, v) for k, v in prop.items() if k.startswith("value")), None)
        if value is not None and prop.get("code") not in ("parent", "child"):
            props.append((str(prop.get("code")), *value))
    props += [("parent", "valueCode", c) for c in sorted(cs.parents.get(known, ()))]
    props += [("child", "valueCode", c) for c in sorted(cs.children(known))]
    for name, key, value in props:
        if not wanted or name in wanted:
            out.append({"name": "property", "part": [{"name": "code", "valueCode": name},
                                                     {"name": "value", key: value}]})
    return FhirResponse(200, resource={"resourceType": "Parameters", "parameter": out})


# -- $subsumes -------------------------------------------------------------------------------------

async def subsumes(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    p = OperationParameters(req, "subsumes")
    one_of(p, "subsumes", "codeA", "codingA")
    one_of(p, "subsumes", "codeB", "codingB")
    cs_res: dict[str, Any] | None = None
    if id is not None:
        cs_res, _ = operand(repo, p, "CodeSystem", id, "codeSystem", "system", "version")
    coding_a, coding_b = p.coding("codingA"), p.coding("codingB")
    code_a = p.string("codeA") or (coding_a or {}).get("code")
    code_b = p.string("codeB") or (coding_b or {}).get("code")
    if not code_a or not code_b:
        raise invalid("$subsumes needs two codes: 'codeA' and 'codeB' (with 'system'), or 'codingA' and 'codingB'",
                      "codeA" if not code_a else "codeB")
    systems = {s for s in (p.string("system"), (coding_a or {}).get("system"), (coding_b or {}).get("system"),
                           cs_res.get("url") if cs_res else None) if s}
    if len(systems) > 1:
        raise invalid(f"$subsumes compares codes of one code system, not of {', '.join(sorted(systems))}", "system")
    if cs_res is None:
        if not systems:
            raise invalid("$subsumes needs the code system: 'system', or codings with their system", "system")
        cs_res = _resolve_code_system(repo, systems.pop(), p.string("version"))
    cs = _service(repo).index(cs_res)
    known: list[str] = []
    for name, code in (("codeA", code_a), ("codeB", code_b)):
        c = cs.canonical(code)
        if c is None:
            raise invalid(f"Unknown code {cs.url}#{code}: not in the code system", name, code="code-invalid")
        known.append(c)
    outcome = cs.subsumes(known[0], known[1])
    return FhirResponse(200, resource={"resourceType": "Parameters",
                                       "parameter": [{"name": "outcome", "valueCode": outcome}]})


def install(operations: OperationRegistry) -> None:
    # Idempotent: GET and POST; read-only over the shared directory, so the type's read permission.
    for name, handler, definition, types, instance in [
        ("expand", expand, "ValueSet-expand", ("ValueSet",), True),
        ("validate-code", validate_code, "ValueSet-validate-code", ("ValueSet", "CodeSystem"), True),
        ("lookup", lookup, "CodeSystem-lookup", ("CodeSystem",), False),
        ("subsumes", subsumes, "CodeSystem-subsumes", ("CodeSystem",), True),
        ("translate", translate, "ConceptMap-translate", ("ConceptMap",), True),
    ]:
        operations.register(Operation(name, handler, _OD + definition, type=True, instance=instance,
                                      resource_types=types, methods=("GET", "POST"), permission="r"))
