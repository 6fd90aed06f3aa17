"""``_text``, ``_content`` (https://hl7.org/fhir/R4/search.html#text) and Location ``near``
(https://hl7.org/fhir/R4/location.html#positional): word extraction, the narrative's plain text, the
word cap, near values, distances and the bounding box that prefilters them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.search import fulltext, registry
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.params import near
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import NearValue, Param


def test_narrative_text_strips_markup_and_decodes_entities() -> None:
    div = ('<div xmlns="http://www.w3.org/1999/xhtml"><p>Blood <b>Pres</b>sure</p><!-- no -->'
           "<table><tr><td>a&amp;b</td><td>&lt;c&gt;&#160;d</td></tr></table>line<br/>break</div>")
    assert fulltext.narrative_text(div).split() == ["Blood", "Pressure", "a&b", "<c>", "d", "line", "break"]


def test_words_are_normalised_distinct_and_keep_the_written_form() -> None:
    assert fulltext.words(["Müller O'Brien", "김민준 müller Müller"]) == [
        ("muller", "Müller"), ("o", "O"), ("brien", "Brien"), ("김민준", "김민준"), ("muller", "müller")]


def test_text_and_content_entries(definitions: Definitions) -> None:
    index = make_indexer(definitions)
    patient = {"resourceType": "Patient", "id": "x", "meta": {"versionId": "1"},
               "text": {"status": "generated", "div": "<div><p>Élodie</p></div>"},
               "identifier": [{"system": "urn:oid:1.2", "value": "MRN-7"}],
               "name": [{"family": "Zoë"}], "managingOrganization": {"reference": "Organization/o1"}}
    entries = index("Patient", patient)
    text = {e.text for e in entries if e.param == "_text"}
    content = {e.text for e in entries if e.param == "_content"}
    assert text == {"elodie"}
    assert content == {"generated", "mrn", "7", "zoe"}  # no id, meta, system, reference or narrative


def test_content_caps_the_words_indexed(definitions: Definitions) -> None:
    index = make_indexer(definitions)
    note = " ".join(f"w{i}" for i in range(fulltext.MAX_WORDS + 500))
    obs = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
           "note": [{"text": note}]}
    words = [e for e in index("Observation", obs) if e.param == "_content"]
    assert len(words) == fulltext.MAX_WORDS


def test_declared(definitions: Definitions) -> None:
    assert {"_text", "_content"} <= set(registry.params_for(definitions, "Patient"))
    assert "_text" not in registry.params_for(definitions, "Bundle")  # not a DomainResource
    assert registry.params_for(definitions, "Location")["near"].type == "special"


def test_near_values() -> None:
    assert near.parse_value("1|2", None, "near") == NearValue(1.0, 2.0, 50.0)
    assert near.parse_value("1|2|3000|m", None, "near") == NearValue(1.0, 2.0, 3.0)
    assert near.parse_value("1|2|10|[mi_i]", None, "near").km == pytest.approx(16.09344)
    for bad in ["1", "x|2", "1|2|x", "1|2|3|mi", "-91|0", "0|-181", "0|0|-1", "inf|0", "0|0|1|km|1"]:
        with pytest.raises(FhirError) as err:
            near.parse_value(bad, None, "near")
        assert "near" in str(err.value.issues) or "near" in str(err.value), bad


def test_near_parses_into_the_query(definitions: Definitions) -> None:
    q = parse(definitions, "Location", [("near", "1|2|3,4|5")])
    c = q.params[0]
    assert isinstance(c, Param) and c.type == "special" and len(c.values) == 2


def test_distance() -> None:
    assert near.distance_km(0, 0, 0, 1) == pytest.approx(111.195, abs=0.01)
    assert near.distance_km(37.5665, 126.978, 35.1796, 129.0756) == pytest.approx(325, abs=5)
    assert near.distance_km(0, 179.5, 0, -179.5) == pytest.approx(111.195, abs=0.01)


@given(st.floats(-89, 89), st.floats(-180, 180), st.floats(0, 3000), st.floats(-90, 90), st.floats(-180, 180))
def test_the_box_encloses_the_circle(lat: float, lon: float, km: float, plat: float, plon: float) -> None:
    v = NearValue(lat, lon, km)
    if not near.within(plat, plon, lat, lon, km):
        return
    lo, hi, lons = near.box(v)
    assert lo <= plat <= hi
    assert any(a <= plon <= b for a, b in lons)
    assert all(-180 <= a <= b <= 180 for a, b in lons) and not math.isnan(lo)
