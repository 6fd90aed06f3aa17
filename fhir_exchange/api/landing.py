"""``GET /``: a small HTML page for a person who opens the server's address in a browser.

It links the FHIR base, the CapabilityStatement (``metadata``), the SMART configuration, the portal
(when it is on), health and readiness, and the documentation: the Markdown files of ``docs/`` when the
server runs from a source checkout (served as plain text under ``/docs/``), and the FHIR R4
specification.
"""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from fhir_exchange.settings import Settings

FHIR_SPEC = "https://hl7.org/fhir/R4/"
_DOCS = Path(__file__).resolve().parents[2] / "docs"


def doc_files(folder: Path = _DOCS) -> list[str]:
    return sorted(p.name for p in folder.glob("*.md")) if folder.is_dir() else []


class Landing:
    def __init__(self, settings: Settings, docs: Path = _DOCS) -> None:
        self.settings = settings
        self.docs = docs

    def links(self) -> list[tuple[str, str]]:
        base = self.settings.base_path.rstrip("/") or "/"
        root = base.rstrip("/")
        out = [(f"{base}", "FHIR base (R4 4.0.1)"),
               (f"{root}/metadata", "CapabilityStatement"),
               (f"{root}/.well-known/smart-configuration", "SMART configuration (token endpoint, scopes)")]
        if getattr(self.settings, "portal", False):
            out.append(("/portal", "Portal for institutions without a FHIR-capable EMR"))
        out += [("/healthz", "Health"), ("/readyz", "Readiness")]
        out += [(f"/docs/{name}", f"Documentation: {name}") for name in doc_files(self.docs)]
        out.append((FHIR_SPEC, "The FHIR R4 specification"))
        return out

    async def page(self, request: Request) -> Response:
        items = "\n".join(f'    <li><a href="{html.escape(href)}">{html.escape(text)}</a></li>'
                          for href, text in self.links())
        body = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>fhir-exchange</title></head>
<body>
  <h1>fhir-exchange</h1>
  <p>An HL7 FHIR R4 server for remote-consultation requests between institutions.</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""
        return HTMLResponse(body)

    async def doc(self, request: Request) -> Response:
        name = request.path_params["name"]
        # Only the files the landing page lists: no path from the request reaches the file system.
        if name not in doc_files(self.docs):
            return PlainTextResponse("No such document\n", status_code=404)
        return PlainTextResponse((self.docs / name).read_text(encoding="utf-8"),
                                 media_type="text/markdown; charset=utf-8")
