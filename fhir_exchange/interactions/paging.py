"""Paging links of history and searchset Bundles (https://hl7.org/fhir/R4/http.html#paging)."""

from __future__ import annotations

from urllib.parse import urlencode


def page_links(base: str, params: list[tuple[str, str]], offset: int, count: int, total: int | None,
               page_len: int) -> list[dict[str, str]]:
    """self, first, previous, next for offset paging; ``params`` exclude _offset/_count."""

    def url(off: int) -> str:
        q = urlencode([*params, ("_count", str(count)), ("_offset", str(off))])
        return f"{base}?{q}"

    links = [{"relation": "self", "url": url(offset)}, {"relation": "first", "url": url(0)}]
    if offset > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    has_next = (offset + page_len < total) if total is not None else page_len >= count
    if has_next and count > 0:
        links.append({"relation": "next", "url": url(offset + count)})
    if total is not None and count > 0:
        last = max(0, ((total - 1) // count) * count)
        links.append({"relation": "last", "url": url(last)})
    return links
