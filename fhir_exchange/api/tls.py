"""Client certificates for the application, when uvicorn serves TLS itself (``serve --client-ca``).

uvicorn verifies a client certificate against the CA it is given but does not pass the certificate
to the application. :class:`ClientCertH11Protocol` is uvicorn's h11 protocol plus one thing: after
the TLS handshake it reads the verified peer certificate's subject and offers it to the application
as the ASGI TLS extension's ``client_cert_name`` (``scope["extensions"]["tls"]``), which is where a
server implementing that extension puts it. :mod:`fhir_exchange.api.auth` reads it from there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def subject_name(cert: dict[str, Any]) -> str:
    """The subject of a certificate as ``ssl.SSLSocket.getpeercert()`` gives it, as ``key=value,...``."""
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(f"{key}={value}")
    return ",".join(parts)


class ClientCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            return
        name = subject_name(cert)
        app = self.app

        async def with_client_certificate(scope: Any, receive: Any, send: Any) -> None:
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {**(extensions.get("tls") or {}), "client_cert_name": name}
            await app({**scope, "extensions": extensions}, receive, send)

        self.app = with_client_certificate
