"""FHIR XML (https://hl7.org/fhir/R4/xml.html): JSON → XML → JSON gives the same JSON, the XML has the
structure the StructureDefinitions give it, and hostile XML is refused.

The structural check below reads the snapshots itself (no shapes, nothing of formats/xml.py): every element
a name its parent's definition has, in the definition's order, repeated only where the definition allows,
attributes only where ``representation`` says ``xmlAttr``, resources one level inside their property and
the narrative in the XHTML namespace. The FHIR XSDs are not in the package; this is their structure part.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from fhir_exchange.definitions import Definitions
from fhir_exchange.definitions.definitions import CONFORMANCE_TYPES
from fhir_exchange.fhir import jsonio
from fhir_exchange.formats import xml as fx
from fhir_exchange.validation.shapes import ShapeBuilder

ROOT = Path(__file__).resolve().parents[2]
F = "{http://hl7.org/fhir}"
XHTML = "{http://www.w3.org/1999/xhtml}"

# Test files that are not R4 JSON (they test that the validator refuses them): XML cannot carry them.
NOT_R4 = {
    "tests/data/fhirpath-r4/inputs/parameters-example-types.json": "valueUuid is an object",
    "tests/data/validator-r4/cases/ai3.json": "unknownElement",
    "tests/data/validator-r4/cases/opdef-out-profile.json": "ElementDefinition.max as a number",
    "tests/data/validator-r4/cases/toplevel-minvalueduration-profile.json": "minValueDuration (R5)",
    "tests/data/validator-r4/cases/ref-policy-r5.json": "List.subject as an array (R5)",
}
# The narrative's XHTML written differently from how XML writes it back (same XML, other characters):
# `&quot;` in text, CRLF line ends, `<td></td>`; and `_given` shorter than `given` (padded with nulls).
LEXICAL = {
    "tests/data/validator-r4/cases/bb-vs.json",
    "tests/data/validator-r4/cases/cs-narrative-status.json",
    "tests/data/validator-r4/cases/bundle-resolve-deep-profile.json",
    "tests/data/validator-r4/cases/ips-htmlrefs-backwards.json",
    "tests/data/validator-r4/cases/ab/StructureDefinition-my-appointment-profile.json",
    "tests/data/fhirpath-r4/inputs/patient-name-extensions.json",
}


@pytest.fixture(scope="module")
def shapes(definitions: Definitions) -> ShapeBuilder:
    return fx.shapes_for(definitions)


def resource_files() -> list[Path]:
    out = []
    for pattern in ("examples/**/*.json", "profiles/*.json", "tests/data/**/*.json"):
        for path in sorted(ROOT.glob(pattern)):
            try:
                doc = jsonio.loads(path.read_bytes())
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
                out.append(path)
    return out


def normalised(doc: Any) -> Any:
    """``doc`` with each narrative in canonical XML and ``_name`` arrays as long as their values."""
    if isinstance(doc, list):
        return [normalised(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    out = {k: (etree.canonicalize(v.replace("\r\n", "\n")) if k == "div" and isinstance(v, str) else normalised(v))
           for k, v in doc.items()}
    for k, v in out.items():
        if k.startswith("_") and isinstance(v, list) and isinstance(out.get(k[1:]), list):
            v.extend([None] * (len(out[k[1:]]) - len(v)))
    return out


def round_trip(doc: dict[str, Any], shapes: ShapeBuilder) -> tuple[dict[str, Any], bytes]:
    xml = fx.to_xml(doc, shapes)
    return fx.to_json(xml, shapes), xml


# -- the structure check, from the snapshots -----------------------------------------------------------


Found = tuple[int, dict[str, Any], str | None]  # an element's position, ElementDefinition and type code


class Structure:
    def __init__(self, definitions: Definitions) -> None:
        self.defs = definitions
        self.kids: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # (sd url, path) → (attribute names, {element name: (position, ElementDefinition, type code)})
        self.index: dict[tuple[str, str], tuple[set[str], dict[str, Found]]] = {}
        self.sds: dict[str, dict[str, Any] | None] = {}
        self.checked = 0

    def sd(self, code: str) -> dict[str, Any] | None:
        if code not in self.sds:
            self.sds[code] = self.defs.structure_definition(code)
        return self.sds[code]

    def children(self, sd: dict[str, Any], path: str) -> list[dict[str, Any]]:
        key = (sd["url"], path)
        if key not in self.kids:
            self.kids[key] = [e for e in sd["snapshot"]["element"] if ":" not in e["id"]
                              and e["path"].rpartition(".")[0] == path]
        return self.kids[key]

    def names(self, sd: dict[str, Any], path: str) -> tuple[set[str], dict[str, Found]]:
        key = (sd["url"], path)
        if key not in self.index:
            attrs: set[str] = set()
            names: dict[str, Found] = {}
            for i, e in enumerate(self.children(sd, path)):
                name = e["path"].rpartition(".")[2]
                if "xmlAttr" in e.get("representation", ()):
                    attrs.add(name)
                elif name.endswith("[x]"):
                    for t in e.get("type", ()):
                        names[name[:-3] + t["code"][0].upper() + t["code"][1:]] = (i, e, t["code"])
                else:
                    names[name] = (i, e, e["type"][0]["code"] if e.get("type") else None)
            self.index[key] = (attrs, names)
        return self.index[key]

    def resource(self, el: Any, where: str) -> None:
        name = etree.QName(el)
        sd = self.sd(name.localname)
        assert name.namespace == F[1:-1] and sd and sd["kind"] == "resource", f"{where}: <{el.tag}> is no resource"
        self.element(el, sd, sd["type"], where + "/" + name.localname, resource=True)

    def element(self, el: Any, sd: dict[str, Any], path: str, where: str, resource: bool = False) -> None:
        self.checked += 1
        attrs, names = self.names(sd, path)
        for attr in el.attrib:
            assert attr.startswith("{") or attr in attrs, f"{where}: attribute '{attr}' not allowed"
        assert not resource or not el.attrib, f"{where}: a resource carries no attributes"
        last = -1
        for child in el:
            q = etree.QName(child)
            here = f"{where}/{q.localname}"
            found = names.get(q.localname)
            assert found, f"{here}: no such element in {path}"
            i, e, code = found
            assert i > last or (i == last and e["max"] != "1"), f"{here}: out of order or repeated"
            last = i
            if code == "xhtml":
                assert child.tag == XHTML + "div", f"{here}: the narrative is not an XHTML div"
                continue
            assert q.namespace == F[1:-1], f"{here}: not in the FHIR namespace"
            if e.get("contentReference"):
                self.element(child, sd, e["contentReference"].lstrip("#"), here)
            elif self.children(sd, e["path"]):
                self.element(child, sd, e["path"], here)
            elif code in ("Resource", "DomainResource") or (code and self.defs.is_resource_type(code)):
                inner = list(child)
                assert len(inner) == 1 and not child.attrib, f"{here}: one resource expected"
                self.resource(inner[0], here)
            else:
                assert code, f"{here}: untyped"
                if code.startswith("http://hl7.org/fhirpath/System."):  # Resource.id and the like: the FHIR type
                    ext = e["type"][0].get("extension") or [{}]
                    code = ext[0].get("valueUrl") or ext[0].get("valueUri") or "string"
                type_sd = self.sd(code)
                assert type_sd, f"{here}: unknown type {code}"
                self.element(child, type_sd, type_sd["type"], here)


# -- round trips ---------------------------------------------------------------------------------------


def test_every_json_resource_of_the_tests_round_trips(definitions: Definitions, shapes: ShapeBuilder) -> None:
    structure = Structure(definitions)
    same, lexical, refused = 0, set(), {}
    for path in resource_files():
        rel = str(path.relative_to(ROOT))
        doc = jsonio.loads(path.read_bytes())
        try:
            back, xml = round_trip(doc, shapes)
        except fx.XmlError as exc:
            refused[rel] = str(exc)
            continue
        structure.resource(etree.fromstring(xml), rel)
        if jsonio.canonical(back) == jsonio.canonical(doc):
            same += 1
        else:
            assert jsonio.canonical(normalised(back)) == jsonio.canonical(normalised(doc)), rel
            lexical.add(rel)
    assert set(refused) == set(NOT_R4), refused
    assert lexical == LEXICAL
    assert same > 300, same
    print(f"\n{same} test resources identical after JSON → XML → JSON, {len(lexical)} equal as XML, "
          f"{len(refused)} not R4")


def test_the_core_package_round_trips(definitions: Definitions, shapes: ShapeBuilder) -> None:
    """Every conformance resource loaded (core 4.0.1, KR Core, profiles/), with the structure check on a
    sample of them (every one checked is a second walk of the XML)."""
    structure = Structure(definitions)
    started = time.perf_counter()
    count = 0
    for rt in sorted(CONFORMANCE_TYPES):
        for i, res in enumerate(definitions.iter(rt)):
            back, xml = round_trip(res, shapes)
            assert jsonio.canonical(back) == jsonio.canonical(res), (rt, res.get("url"))
            if i % 7 == 0:
                structure.resource(etree.fromstring(xml), f"{rt} {res.get('url')}")
            count += 1
    assert count > 4000, count
    print(f"\n{count} conformance resources identical after JSON → XML → JSON in "
          f"{time.perf_counter() - started:.1f} s; {structure.checked} elements checked against the snapshots")


# -- what the rules of xml.html ask, one by one ------------------------------------------------------------

OBS = {
    "resourceType": "Observation", "id": "o1",
    "valueQuantity": {"value": jsonio.loads(b"[1.10]")[0], "unit": "kg"},
    "modifierExtension": [{"url": "http://example.org/m", "valueBoolean": True}],
    "status": "final", "code": {"text": "weight"},
    "_status": {"id": "s1", "extension": [{"url": "http://example.org/e",
                                           "valueDecimal": jsonio.loads(b"[0.010]")[0]}]},
    "extension": [{"url": "http://example.org/x", "valueInteger": 3}],
    "meta": {"versionId": "1"},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>1.10 kg</p></div>'},
    "component": [{"code": {"text": "c"}, "valueString": "v"}],
}


def test_element_order_attributes_and_primitive_extensions(shapes: ShapeBuilder) -> None:
    xml = fx.to_xml(OBS, shapes)
    root = etree.fromstring(xml)
    assert [etree.QName(c).localname for c in root] == [
        "id", "meta", "text", "extension", "modifierExtension", "status", "code", "valueQuantity", "component"]
    assert root.find(F + "id").get("value") == "o1"  # Resource.id is an element
    status = root.find(F + "status")
    assert status.get("id") == "s1" and status.get("value") == "final"  # Element.id is an attribute
    assert status.find(f"{F}extension/{F}valueDecimal").get("value") == "0.010"
    assert root.find(F + "extension").get("url") == "http://example.org/x"  # Extension.url too
    assert root.find(f"{F}valueQuantity/{F}value").get("value") == "1.10"
    assert root.find(f"{F}text/{XHTML}div/{XHTML}p").text == "1.10 kg"
    back = fx.to_json(xml, shapes)
    assert jsonio.dumps(back["valueQuantity"]) == b'{"value":1.10,"unit":"kg"}'
    assert jsonio.canonical(back) == jsonio.canonical(OBS)


@pytest.mark.parametrize("text", ["1.10", "0.010", "-0.5", "1e-10", "1.0E+5", "100", "0.12345678901234567890",
                                  "3.0"])
def test_decimals_keep_their_text(shapes: ShapeBuilder, text: str) -> None:
    doc = jsonio.loads(b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                       b'"valueQuantity":{"value":' + text.encode() + b"}}")
    back, xml = round_trip(doc, shapes)
    assert f'<value value="{text}"/>'.encode() in xml
    assert jsonio.dumps(back) == jsonio.dumps(doc)


def test_arrays_with_nulls_and_nested_resources(shapes: ShapeBuilder) -> None:
    doc = {"resourceType": "Parameters", "parameter": [
        {"name": "p", "resource": {"resourceType": "Patient", "name": [{"given": ["a", None, "c"],
                                                                         "_given": [None, {"id": "g", "extension": [
            {"url": "http://example.org/e", "valueCode": "masked"}]}, None]}]}},
        {"name": "b", "resource": {"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="}}]}},
        {"name": "c", "resource": {"resourceType": "Patient", "contained": [
            {"resourceType": "Organization", "id": "o", "name": "Org"}],
            "managingOrganization": {"reference": "#o"}}}]}
    back, xml = round_trip(doc, shapes)
    assert back == doc
    root = etree.fromstring(xml)
    assert root.find(f"{F}parameter/{F}resource/{F}Patient/{F}name") is not None
    binary = root.find(f"{F}parameter/{F}resource/{F}Bundle/{F}entry/{F}resource/{F}Binary")
    assert binary.find(F + "data").get("value") == "aGk="
    assert [g.get("value") for g in root.iterfind(f".//{F}given")] == ["a", None, "c"]


@pytest.mark.parametrize(("doc", "message"), [
    ({"resourceType": "Patient", "colour": "red"}, "Unknown property 'colour'"),
    ({"resourceType": "Patient", "active": "yes"}, "not a JSON value of FHIR type boolean"),
    ({"resourceType": "Patient", "gender": ["male"]}, "must be a primitive value"),
    ({"resourceType": "Unicorn"}, "not a resource of a known type"),
    ({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>no namespace</div>"}}, "XHTML"),
    ({"resourceType": "Patient", "text": {"status": "generated", "div": "<div"}}, "not well-formed"),
])
def test_json_without_an_xml_form_is_refused(shapes: ShapeBuilder, doc: dict[str, Any], message: str) -> None:
    with pytest.raises(fx.XmlError, match=message):
        fx.to_xml(doc, shapes)


def test_html_entities_in_a_narrative_are_written_as_characters(shapes: ShapeBuilder) -> None:
    doc = {"resourceType": "Basic", "code": {"text": "x"},
           "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a&nbsp;b &amp; c</div>'}}
    back, _ = round_trip(doc, shapes)
    assert back["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml">a\u00a0b &amp; c</div>'


# -- reading: strict for requests, lenient for definitions -------------------------------------------------


@pytest.mark.parametrize(("xml", "message"), [
    (b'<Patient xmlns="http://hl7.org/fhir"><colour value="red"/></Patient>', "Unknown element 'colour'"),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="male"/></Patient>',
     "more than once"),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="male">text</gender></Patient>', "Unexpected text"),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="male" colour="x"/></Patient>', "Unexpected attribute"),
    (b'<Patient xmlns="http://example.org"/>', "not a FHIR resource"),
    (b'<Unicorn xmlns="http://hl7.org/fhir"/>', "not a FHIR resource"),
    (b'<Patient xmlns="http://hl7.org/fhir"><contained/></Patient>', "exactly one resource"),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender/></Patient>', "neither a value nor extensions"),
    (b'<Patient xmlns="http://hl7.org/fhir">\n  <gender value="male">\n</Patient>', "line 3, column"),
])
def test_strict_reading_refuses_what_json_cannot_hold(shapes: ShapeBuilder, xml: bytes, message: str) -> None:
    with pytest.raises(fx.XmlError, match=message):
        fx.to_json(xml, shapes)


def test_lenient_reading_skips_unknown_content(shapes: ShapeBuilder) -> None:
    xml = b'<Patient xmlns="http://hl7.org/fhir"><colour value="red"/><gender value="male"/></Patient>'
    assert fx.to_json(xml, shapes, strict=False) == {"resourceType": "Patient", "gender": "male"}


# -- hostile XML ---------------------------------------------------------------------------------------------

LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                     for i in range(1, 10))
          + b']><Patient xmlns="http://hl7.org/fhir"><gender value="&lol9;"/></Patient>')


@pytest.mark.parametrize(("xml", "code"), [
    (LAUGHS, "security"),
    (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     b'<Patient xmlns="http://hl7.org/fhir"><gender value="&x;"/></Patient>', "security"),
    (b'<!DOCTYPE p SYSTEM "http://example.org/evil.dtd"><Patient xmlns="http://hl7.org/fhir"/>', "security"),
    ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE p [<!ENTITY a "b">]><Patient xmlns="http://hl7.org/fhir"/>'
     .encode("utf-16"), "security"),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="&undeclared;"/></Patient>', "structure"),
    (b'<Patient xmlns="http://hl7.org/fhir">' + b"<extension>" * 1000 + b"</extension>" * 1000 + b"</Patient>",
     "too-costly"),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="' + b"x" * 11_000_000 + b'"/></Patient>', "too-costly"),
])
def test_hostile_xml_is_refused(shapes: ShapeBuilder, xml: bytes, code: str) -> None:
    started = time.perf_counter()
    with pytest.raises(fx.XmlError) as caught:
        fx.to_json(xml, shapes)
    assert caught.value.code == code, caught.value
    assert time.perf_counter() - started < 2


def test_the_definitions_loader_reads_through_the_same_converter(shapes: ShapeBuilder) -> None:
    from fhir_exchange.validation.xml import parse_xml_resource

    with pytest.raises(ValueError, match="DOCTYPE"):
        parse_xml_resource(LAUGHS, shapes)
    assert parse_xml_resource(b'<Patient xmlns="http://hl7.org/fhir"><x/><active value="true"/></Patient>',
                              shapes) == {"resourceType": "Patient", "active": True}
