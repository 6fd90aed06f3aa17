"""Bundles assembled from stored bytes: entries are spliced in, never parsed and re-serialised."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def splice_bundle(head: dict[str, Any], entries: Iterable[tuple[dict[str, Any], bytes | None]]) -> bytes:
    """``head`` holds Bundle fields; each entry is (entry fields without resource, resource bytes)."""
    parts: list[bytes] = []
    for fields, body in entries:
        enc = orjson.dumps(fields)
        if body:
            # Insert "resource" as the second member, after fullUrl, where readers expect it.
            if enc == b"{}":
                parts.append(b'{"resource":' + body + b"}")
            else:
                parts.append(enc[:-1] + b',"resource":' + body + b"}")
        else:
            parts.append(enc)
    head_bytes = orjson.dumps(head)
    return head_bytes[:-1] + b',"entry":[' + b",".join(parts) + b"]}" if parts else head_bytes

