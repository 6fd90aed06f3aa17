"""Typed settings; every option can come from an environment variable ``FHIR_EXCHANGE_<NAME>``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "FHIR_EXCHANGE_"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Worker processes of ``serve`` on one store (issue 19); 0: one per core (os.cpu_count()), 1: one process.
    workers: int = 0
    data_dir: Path = Path("./data")
    # sqlite:///path/to/file.db, or mongodb://host/db; empty: a SQLite file in data_dir.
    store_url: str = ""
    base_path: str = "/fhir"
    # Public base URL used in fullUrl/Location; empty: taken from each request.
    public_base_url: str = ""
    max_body_bytes: int = 32 * 1024 * 1024  # also the bound on a gzip body once inflated
    # Slow and greedy clients (api/protocol.py, api/limits.py): seconds to send the request head, seconds
    # between two body chunks, open connections at most (more are answered 503 by uvicorn), the listen
    # backlog, seconds an idle keep-alive connection stays open.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    backlog: int = 2048
    keep_alive_timeout: float = 5.0
    # Bodies of at least this many bytes are parsed in a worker thread, at most big_body_workers at once.
    offload_bytes: int = 256 * 1024
    big_body_workers: int = 2
    # SQLite's synchronous mode in WAL: "full" (default) makes every commit durable across power loss;
    # "normal" may lose the last commits on power loss (never corrupts), for faster writes.
    sqlite_synchronous: str = "full"
    default_count: int = 50
    max_count: int = 1000
    # Concepts a ValueSet/$expand returns without count (more: 422 too-costly); also the cap of one page.
    max_expansion: int = 10000
    # Search limits (fhir_exchange/search/limits.py): a query beyond one is a 400 naming the limit.
    search_max_criteria: int = 64  # ANDed search parameters
    search_max_values: int = 100  # OR values of one parameter
    search_max_values_total: int = 500  # OR values of all parameters together
    search_max_sort_keys: int = 8
    search_max_chain_depth: int = 3  # reference steps of one chained parameter
    search_max_has_depth: int = 2  # nested _has steps
    search_max_includes: int = 20  # _include and _revinclude parameters together
    search_max_query_length: int = 8192  # characters of all names and values
    search_max_filter_depth: int = 8  # nested parentheses / not of one _filter
    # Seconds one store search (or read) may run before it is interrupted and answered 503 with Retry-After.
    search_timeout: float = 10.0
    # Extra FHIR NPM packages (.tgz or folders) loaded after the core package and profiles/.
    packages: tuple[str, ...] = field(default_factory=tuple)
    # Where unpacked FHIR packages and derived caches live; empty: ~/.cache/fhir-exchange.
    cache_dir: str = ""
    log_level: str = "info"
    # Log lines as JSON objects (one a line, for a log collector) or as text (a terminal); fhir_exchange/logs.py.
    log_format: str = "json"
    # Who may scrape GET /metrics: addresses or networks (comma-separated), "*" for anyone.
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1")
    # Profiles every resource of a type must conform to, as "Type=canonical" (comma-separated in the
    # environment). None by default: a general FHIR server validates against the core definitions.
    required_profiles: tuple[str, ...] = field(default_factory=tuple)
    # Stricter validation (validation/policy.py); the defaults refuse no valid data. validation_example_urls
    # false: URLs in domains reserved for examples (example.org, *.example, OID 2.999) are errors;
    # validation_unknown_extensions "error": extensions the server has no definition for are errors, except
    # under validation_extension_domains (url prefixes, comma-separated in the environment).
    validation_example_urls: bool = True
    validation_unknown_extensions: str = "warning"
    validation_extension_domains: tuple[str, ...] = field(default_factory=tuple)
    # Require the consult IG's profiles of resources that take part in a consult (consult/profiles.py).
    consult_profiles: bool = True
    # Seconds between reads of the store's change feed (definitions written by other processes).
    feed_interval: float = 1.0
    # The consult workflow: its rules on every write of a consult resource, consent-based access.
    consult_workflow: bool = True
    consult_grace_days: int = 30  # the consultant reads a completed consult this many days
    consult_networks: bool = True  # a partner requests consults only from a hub it is affiliated with
    consult_sweep_interval: float = 60.0  # seconds between sweeps (consents ending, follow-ups overdue)
    # Authentication (SMART Backend Services bearer tokens, or a registered client certificate). Off
    # (FHIR_EXCHANGE_AUTH=off, serve --no-auth) every caller acts as the system: development only.
    auth: bool = True
    token_lifetime: int = 300  # seconds an access token is valid
    # Audit every request into its own store (sqlite: <store>-audit.db beside the store; mongodb: the
    # database name + "_audit"); only while authentication is on (without it there is no "who").
    audit_store_url: str = ""
    # Browsers: origins allowed by CORS (comma-separated; "*" for any). None by default.
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    # Requests per second a client may make (a token bucket of twice that burst); 0: no limit.
    rate_limit: float = 100.0
    # A TLS-terminating reverse proxy in front may pass the verified client certificate's subject in
    # this header; it is believed only from these proxy addresses.
    client_cert_header: str = ""
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    # TLS served directly: certificate and key; client certificates verified against client_ca.
    certfile: str = ""
    keyfile: str = ""
    client_ca: str = ""
    # Notifications (Subscriptions) and message forwarding (fhir_exchange/notify/). Endpoints on loopback,
    # private, link-local or otherwise non-public addresses are refused unless this is true (tests, a
    # deployment whose EMRs are reached over a VPN), so the server cannot be turned against its own network.
    allow_private_endpoints: bool = False
    subscriptions_per_client: int = 20  # Subscriptions one client may hold
    notify_interval: float = 0.5  # seconds between reads of the change feed (writes of this process: at once)
    notify_retry_min: float = 1.0  # seconds before the first retry of a failed delivery, doubled per failure
    notify_retry_max: float = 300.0  # the longest wait between two retries
    notify_error_after: int = 3  # consecutive failures that set a Subscription's status to error
    notify_timeout: float = 10.0  # seconds a receiver has to answer one delivery
    notify_heartbeat_min: int = 10  # the shortest heartbeat period granted to a topic-based Subscription
    notify_lease: float = 10.0  # seconds a process holds the delivery lease after its last renewal
    forward_max_attempts: int = 20  # attempts to forward one message before it is given up as failed
    forward_retention_days: int = 30  # how long the delivery state of a forwarded message is kept
    # The portal: web pages under /portal for institutions without a FHIR-capable EMR (fhir_exchange/portal/).
    portal: bool = True
    portal_session_seconds: int = 8 * 3600  # a login lasts this long (then sign in again)
    portal_lockout_failures: int = 5  # consecutive wrong passwords that lock an account
    portal_lockout_seconds: int = 900  # how long it stays locked (or until `fhir-exchange user unlock`)
    portal_poll_seconds: float = 15.0  # how often an open inbox looks for new consults
    portal_max_upload_bytes: int = 10 * 1024 * 1024  # per uploaded file (PDF, PNG or JPEG)
    # Bulk export ($export, interactions/export.py): where the NDJSON files go (empty: data_dir/exports;
    # several MongoDB hosts share one folder), seconds a job and its files are kept, seconds without a
    # heartbeat after which a running job counts as failed (its process died).
    export_dir: str = ""
    export_retention: int = 86_400
    export_stall_seconds: float = 60.0

    @property
    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{(Path(self.data_dir) / 'fhir.db').resolve()}"

    @property
    def resolved_audit_store_url(self) -> str:
        if self.audit_store_url:
            return self.audit_store_url
        url = self.resolved_store_url
        if url.startswith("sqlite:"):
            path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
            if path in ("", ":memory:"):
                return "sqlite:///:memory:"
            stem, dot, ext = path.rpartition(".")
            return f"sqlite:///{stem}-audit.{ext}" if dot and "/" not in ext else f"sqlite:///{path}-audit"
        scheme, _, rest = url.partition("://")
        hosts, slash, path = rest.partition("/")
        if not slash:
            hosts, _, query = hosts.partition("?")
            db = ""
        else:
            db, _, query = path.partition("?")
        return f"{scheme}://{hosts}/{db or 'fhir_exchange'}_audit" + (f"?{query}" if query else "")

    @property
    def required_profile_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for item in self.required_profiles:
            type, sep, url = item.partition("=")
            if not sep or not type.strip() or not url.strip():
                raise ValueError(f"required_profiles entries are Type=canonical, not {item!r}")
            pairs.append((type.strip(), url.strip()))
        return pairs

    @property
    def local_base_urls(self) -> tuple[str, ...]:
        """The base URLs this server's own resources are addressed under: absolute references on them
        are indexed and searched as relative ones (search/params/reference.py ``local_reference``).
        ``public_base_url`` when set; otherwise the address ``serve`` listens on (loopback names too)."""
        if self.public_base_url:
            return (self.public_base_url.rstrip("/"),)
        scheme = "https" if self.certfile else "http"
        hosts = [self.host]
        if self.host in ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1"):
            hosts = ["127.0.0.1", "localhost"]
        return tuple(f"{scheme}://{h}:{self.port}{self.base_path}".rstrip("/") for h in hosts)

    @property
    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fhir-exchange"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _coerce(type_name: object, raw: str) -> Any:
    t = str(type_name)
    if t == "int":
        return int(raw)
    if t == "float":
        return float(raw)
    if t == "Path":
        return Path(raw)
    if t == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected true or false, not {raw!r}")
    if t.startswith("tuple"):
        return tuple(p for p in raw.split(",") if p)
    return raw
