"""Every JSON object of a document, for tests that pick one to mutate."""

from __future__ import annotations

from typing import Any


def json_objects(node: Any, out: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The objects of ``node`` (itself first when it is one), depth first."""
    out = [] if out is None else out
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            json_objects(v, out)
    elif isinstance(node, list):
        for v in node:
            json_objects(v, out)
    return out
