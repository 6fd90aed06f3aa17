"""Decimal precision survives every path (datatypes.html#decimal: "the original precision should be
preserved"; 1.10 is not 1.1)."""

from __future__ import annotations

import re

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_exchange.fhir import jsonio

OBS = ('{"resourceType":"Observation","id":"d","status":"final","code":{"text":"glucose"},'
       '"valueQuantity":{"value":%s,"unit":"mmol/L"},"referenceRange":[{"low":{"value":%s}}]}')


def raw_values(body: bytes) -> list[str]:
    return re.findall(r'"value":\s*([-0-9.eE+]+)', body.decode())


async def test_decimals_keep_their_text_everywhere(client: httpx.AsyncClient) -> None:
    put = await client.put("/Observation/d", content=(OBS % ("5.10", "0.1e-9")).encode(),
                           headers={"content-type": "application/fhir+json"})
    assert put.status_code == 201
    assert raw_values(put.content) == ["5.10", "0.1e-9"]
    assert raw_values((await client.get("/Observation/d")).content) == ["5.10", "0.1e-9"]
    assert raw_values((await client.get("/Observation/d", params={"_pretty": "true"})).content) == ["5.10",
                                                                                                    "0.1e-9"]
    assert raw_values((await client.get("/Observation/d", params={"_elements": "valueQuantity"})).content) == [
        "5.10"]
    found = await client.get("/Observation", params={"_elements": "valueQuantity,referenceRange"})
    assert raw_values(found.content) == ["5.10", "0.1e-9"]
    patched = await client.patch("/Observation/d", content=b'[{"op":"replace","path":"/status","value":"amended"}]',
                                 headers={"content-type": "application/json-patch+json"})
    assert patched.status_code == 200 and raw_values(patched.content) == ["5.10", "0.1e-9"]
    patched2 = await client.patch("/Observation/d",
                                  content=b'[{"op":"replace","path":"/valueQuantity/value","value":7.250}]',
                                  headers={"content-type": "application/json-patch+json"})
    assert patched2.status_code == 200 and raw_values(patched2.content) == ["7.250", "0.1e-9"]
    assert raw_values((await client.get("/Observation/d/_history/1")).content) == ["5.10", "0.1e-9"]
    hist = (await client.get("/Observation/d/_history")).content
    assert raw_values(hist) == ["7.250", "0.1e-9", "5.10", "0.1e-9", "5.10", "0.1e-9"]


async def test_long_decimals_are_not_cut_to_double_precision(client: httpx.AsyncClient) -> None:
    long = "3.14159265358979323846264338327950288"
    put = await client.put("/Observation/d", content=(OBS % (long, "1")).encode(),
                           headers={"content-type": "application/fhir+json"})
    assert put.status_code == 201
    assert raw_values((await client.get("/Observation/d")).content) == [long, "1"]


# (The integer -0 comes back as 0: same value, no precision to keep.)
decimal_text = st.from_regex(r"\A-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,2})?\Z").filter(
    lambda s: s != "-0")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=decimal_text, b=decimal_text)
async def test_any_decimal_text_reads_back_verbatim(client: httpx.AsyncClient, a: str, b: str) -> None:
    put = await client.put("/Observation/d", content=(OBS % (a, b)).encode(),
                           headers={"content-type": "application/fhir+json"})
    assert put.status_code in (200, 201), put.text
    assert raw_values((await client.get("/Observation/d")).content) == [a, b]


def test_jsonio_plain_floats_stay_floats() -> None:
    doc = jsonio.loads(b'{"a":1.5,"b":1.50,"c":"1.50","d":2}')
    assert type(doc["a"]) is float and type(doc["d"]) is int
    assert isinstance(doc["b"], float) and doc["b"] == 1.5
    assert jsonio.dumps(doc) == b'{"a":1.5,"b":1.50,"c":"1.50","d":2}'
