"""history: https://hl7.org/fhir/R4/http.html#history

Instance, type and system history with ``_count``, ``_since``, ``_at`` and paging links. Entries are
newest first; the first page pins the snapshot (``_till``) so later pages do not shift while others
write.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fhir_exchange.clock import instant
from fhir_exchange.errors import invalid, not_found
from fhir_exchange.interactions.bundle_json import splice_bundle
from fhir_exchange.interactions.common import check_id, check_type, etag
from fhir_exchange.interactions.paging import page_links
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.store.port import HistoryQuery

MAX_OFFSET = 2**62



def _instant_param(req: FhirRequest, name: str) -> str | None:
    raw = req.query_value(name)
    if raw is None:
        return None
    # "2024-01-01T09:00:00+09:00" sent with an unencoded "+" arrives with a space. HAPI FHIR refuses it
    # (HAPI-1883, hapi-fhir#6043: "escape the +") and so do we, but with a diagnostic that says why.
    if re.search(r"T[0-9:.]+ [0-9]{2}:[0-9]{2}$", raw):
        raise invalid(f"Invalid {name} '{raw}': a '+' of the time zone offset must be sent as %2B in a URL", name)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid {name} '{raw}': expected an instant such as 2024-01-31T12:00:00Z", name) from None
    if dt.tzinfo is None:
        if "T" in raw:
            raise invalid(f"Invalid {name} '{raw}': an instant needs a time zone", name)
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return instant(dt)


def _int_param(req: FhirRequest, name: str, default: int, maximum: int | None = None) -> int:
    raw = req.query_value(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise invalid(f"Invalid {name} '{raw}': expected a non-negative integer", name)
    n = int(raw)
    return min(n, maximum) if maximum is not None else n


async def history(repo: Repository, req: FhirRequest, type: str | None = None, id: str | None = None
                  ) -> FhirResponse:
    svc = repo.svc
    if type is not None:
        check_type(svc, type)
    if id is not None:
        check_id(id)
        assert type is not None
        if await repo.read(type, id) is None:
            raise not_found(f"Resource {type}/{id} is not known")
    count = _int_param(req, "_count", svc.settings.default_count, svc.settings.max_count)
    # Far past the end is an empty page; the cap keeps the value inside the stores' 64-bit integers.
    offset = _int_param(req, "_offset", 0, MAX_OFFSET)
    since = _instant_param(req, "_since")
    at = _instant_param(req, "_at")
    till = _instant_param(req, "_till") or instant(svc.clock.now())
    page = await repo.history(HistoryQuery(type, id, since, at, till, count, offset))

    path = "/".join(p for p in (type, id, "_history") if p)
    base = f"{req.base_url}/{path}"
    params = [(k, v) for k, v in req.query if k in ("_since", "_at")] + [("_till", till)]
    entries: list[tuple[dict[str, Any], bytes | None]] = []
    for v in page.versions:
        full_url = f"{req.base_url}/{v.type}/{v.id}"
        if v.deleted:
            fields = {"fullUrl": full_url,
                      "request": {"method": "DELETE", "url": f"{v.type}/{v.id}"},
                      "response": {"status": "204 No Content", "etag": etag(v.version_id),
                                   "lastModified": v.last_updated}}
            entries.append((fields, None))
            continue
        created = v.method == "POST"
        fields = {"fullUrl": full_url,
                  "request": {"method": v.method if v.method in ("POST", "PUT", "PATCH") else "PUT",
                              "url": v.type if created else f"{v.type}/{v.id}"},
                  "response": {"status": "201 Created" if created or v.version_id == 1 else "200 OK",
                               "etag": etag(v.version_id), "lastModified": v.last_updated}}
        entries.append((fields, v.body))
    head = {"resourceType": "Bundle", "id": svc.clock.new_id(), "meta": {"lastUpdated": till},
            "type": "history", "total": page.total,
            "link": page_links(base, params, offset, count, page.total, len(page.versions))}
    return FhirResponse(200, body=splice_bundle(head, entries))
