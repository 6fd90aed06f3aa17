"""Builders for Bundle tests."""

from __future__ import annotations

from typing import Any

SYS = "urn:oid:1.2.410.100.1"


def patient(value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYS, "value": value}], **extra}


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None,
          **request: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if full_url:
        out["fullUrl"] = full_url
    if resource is not None:
        out["resource"] = resource
    out["request"] = {"method": method, "url": url, **request}
    return out


def bundle(type: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": type, "entry": list(entries)}


def status(e: dict[str, Any]) -> int:
    return int(e["response"]["status"].split()[0])
