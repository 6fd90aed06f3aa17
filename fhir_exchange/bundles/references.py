"""References between the entries of a Bundle: https://hl7.org/fhir/R4/http.html#trules and
https://hl7.org/fhir/R4/bundle.html#references

A transaction may name new resources by ``urn:uuid:`` / ``urn:oid:`` fullUrls and refer to them;
when the server assigns their ids it "SHALL replace all matching links in the bundle, whether they are
found in the resource ids, resource references, elements of type uri, url, oid, uuid, and <a href="" &
<img src="" in the narrative. Elements of type canonical are not replaced." Conditional references
(``Patient?identifier=...``, http.html#trules) are resolved by a search and replaced the same way.

What is rewritten here, in one walk per resource (contained resources and extensions included):

- every ``reference`` string member (``Reference.reference``, wherever a Reference sits);
- choice-type members of type uri/url/oid/uuid (``valueUri``, ``valueUrl``, ``valueOid``,
  ``valueUuid``, ``sourceUri``...), whose type shows in the name; plain uri-typed elements would need
  the element definitions and are left as they are (as HAPI FHIR does), and so are ``canonical``s and
  strings such as ``Identifier.value`` (which often holds a ``urn:uuid`` that is NOT a link);
- ``href``/``src`` attributes of the narrative ``div``.

Only exact values are replaced (``urn:uuid:x`` maps, ``urn:uuid:x/...`` does not), so the walk never
changes text that merely contains a fullUrl.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

URN_PREFIXES = ("urn:uuid:", "urn:oid:")
_CONDITIONAL_RE = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")
_URI_SUFFIXES = ("Uri", "Url", "Oid", "Uuid")
_NARRATIVE_LINK_RE = re.compile(r'((?:href|src)\s*=\s*")([^"]+)(")')


def is_urn(url: str | None) -> bool:
    return bool(url) and url.startswith(URN_PREFIXES)  # type: ignore[union-attr]


def conditional(reference: str) -> tuple[str, str] | None:
    """``("Patient", "identifier=...")`` for a conditional reference, else None."""
    m = _CONDITIONAL_RE.match(reference)
    return (m.group(1), m.group(2)) if m else None


def references(node: Any) -> Iterator[str]:
    """Every ``reference`` string in ``node`` (resources, contained resources, extensions)."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for k, v in cur.items():
                if k == "reference" and isinstance(v, str):
                    yield v
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(cur, list):
            stack.extend(x for x in cur if isinstance(x, dict | list))


def rewrite(node: Any, mapping: Mapping[str, str]) -> int:
    """Replace, in place, every link whose exact value is a key of ``mapping``. Returns the count."""
    if not mapping:
        return 0
    count = 0
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, list):
            stack.extend(x for x in cur if isinstance(x, dict | list))
            continue
        if not isinstance(cur, dict):
            continue
        for k, v in cur.items():
            if isinstance(v, str):
                if k == "reference" or (k.endswith(_URI_SUFFIXES) and k != "reference"):
                    new = mapping.get(v)
                    if new is not None:
                        cur[k] = new
                        count += 1
                elif k == "div" and "=" in v:
                    replaced, n = _rewrite_narrative(v, mapping)
                    if n:
                        cur[k] = replaced
                        count += n
            elif isinstance(v, dict | list):
                stack.append(v)
    return count


def _rewrite_narrative(div: str, mapping: Mapping[str, str]) -> tuple[str, int]:
    n = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        new = mapping.get(m.group(2))
        if new is None:
            return m.group(0)
        n += 1
        return m.group(1) + new + m.group(3)

    return _NARRATIVE_LINK_RE.sub(sub, div), n
