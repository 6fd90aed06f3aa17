"""Registered institutions and system clients, kept as records of the store (never FHIR resources: no
client of the API can read or change them), so that every process on the same store, and the
command line, see the same registry at once.

- An **institution** is an Organization of the network (its FHIR resource holds the name and the
  HIRA identifier) that has been registered: its record says how it connects (portal, EMR over a
  private link, exchange system).
- A **client** belongs to one institution and authenticates with a key of its registered JWKS
  (SMART Backend Services) or with a client certificate whose subject was registered; it may be
  granted at most its allowed scopes, and an admin client may also manage conformance resources,
  run ``$reindex`` and register institutions and clients. Disabling a client refuses its tokens at
  once, in every process (each request reads the client's record).
- The **token secret** signs the server's access tokens; it is made once and shared through the
  store. Used client-assertion ids (``jti``) are remembered until their assertion expires.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from fhir_exchange.store.port import Record, ResourceStore

CONNECTIONS = {"portal": "portal", "emr": "vpn-emr", "exchange": "exchange-system"}
"""The ``--connection`` names and the consult IG's connection-style codes they stand for."""

_ATTRIBUTES = {"COMMONNAME": "CN", "ORGANIZATIONNAME": "O", "ORGANIZATIONALUNITNAME": "OU", "COUNTRYNAME": "C",
               "LOCALITYNAME": "L", "STATEORPROVINCENAME": "ST", "EMAILADDRESS": "EMAILADDRESS",
               "SERIALNUMBER": "SERIALNUMBER", "DOMAINCOMPONENT": "DC"}


def normalise_subject(subject: str) -> str:
    """A certificate subject in one comparable form: ``CN=emr-a,O=Hospital A`` whatever the order,
    spacing or attribute spelling (``commonName=...``) it was written or presented in."""
    pairs: list[tuple[str, str]] = []
    for part in re.split(r"(?<!\\),", subject.strip().strip("/").replace("/", ",")):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        name = key.strip().upper().replace(" ", "")
        pairs.append((_ATTRIBUTES.get(name, name), value.strip()))
    return ",".join(f"{k}={v}" for k, v in sorted(pairs))


@dataclass(frozen=True, slots=True)
class Institution:
    organization: str  # Organization id
    name: str
    hira_id: str
    connection: str  # portal | emr | exchange
    endpoint: str  # Endpoint id


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    institution: str  # Organization id
    jwks: dict[str, Any] | None
    scopes: tuple[str, ...]  # what it may be granted
    admin: bool = False
    disabled: bool = False
    cert_subject: str | None = None  # normalised
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Registry:
    store: ResourceStore
    _secret: str | None = field(default=None, repr=False)

    # -- institutions ----------------------------------------------------------------------------

    async def institution(self, organization: str, now: str) -> Institution | None:
        record = await self.store.get_record("institution", organization, now=now)
        return None if record is None else Institution(**orjson.loads(record.value))

    async def institutions(self, now: str) -> list[Institution]:
        return [Institution(**orjson.loads(r.value)) for r in await self.store.list_records("institution", now=now)]

    async def add_institution(self, institution: Institution) -> None:
        await self.store.put_record(Record("institution", institution.organization,
                                           orjson.dumps(asdict(institution))))

    # -- clients ---------------------------------------------------------------------------------

    async def client(self, client_id: str, now: str) -> Client | None:
        record = await self.store.get_record("client", client_id, now=now)
        if record is None:
            return None
        data = orjson.loads(record.value)
        data["scopes"] = tuple(data.get("scopes") or ())
        return Client(**data)

    async def client_by_certificate(self, subject: str, now: str) -> Client | None:
        record = await self.store.get_record("client-cert", normalise_subject(subject), now=now)
        return None if record is None else await self.client(record.value.decode(), now)

    async def add_client(self, client: Client) -> None:
        if client.cert_subject:
            written = await self.store.put_record(Record("client-cert", client.cert_subject,
                                                         client.client_id.encode()), if_absent=True)
            if not written:
                raise ValueError(f"The certificate subject {client.cert_subject} is registered to another client")
        await self.store.put_record(Record("client", client.client_id, orjson.dumps(client.to_json())))

    async def set_disabled(self, client_id: str, disabled: bool, now: str) -> Client | None:
        client = await self.client(client_id, now)
        if client is None:
            return None
        updated = Client(**{**client.to_json(), "disabled": disabled})
        await self.store.put_record(Record("client", client_id, orjson.dumps(updated.to_json())))
        return updated

    async def clients(self, now: str) -> list[Client]:
        out = []
        for r in await self.store.list_records("client", now=now):
            data = orjson.loads(r.value)
            data["scopes"] = tuple(data.get("scopes") or ())
            out.append(Client(**data))
        return out

    # -- tokens ----------------------------------------------------------------------------------

    async def token_secret(self, now: str) -> str:
        """The secret that signs access tokens: made by the first process that needs it, then shared."""
        if self._secret is None:
            await self.store.put_record(Record("secret", "access-token", secrets.token_urlsafe(32).encode()),
                                        if_absent=True, now=now)
            record = await self.store.get_record("secret", "access-token", now=now)
            assert record is not None
            self._secret = record.value.decode()
        return self._secret

    async def use_assertion(self, client_id: str, jti: str, expires: str, now: str) -> bool:
        """Remember a client assertion's id until it expires; False when it was already used (a replay)."""
        return await self.store.put_record(Record("jti", f"{client_id}|{jti}", b"", expires), if_absent=True, now=now)
