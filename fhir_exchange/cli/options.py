"""What every command shares: settings from its options and the environment, the store options, the
base URL clients call."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fhir_exchange.logs import FORMATS
from fhir_exchange.settings import Settings


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from options and ``FHIR_EXCHANGE_*``; a bad value ends the command with a one-line
    message and status 2 (as argparse does for bad options), not a traceback."""
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
            store_url=getattr(args, "store", None),
            auth=False if getattr(args, "no_auth", False) else None,
            certfile=getattr(args, "certfile", None),
            keyfile=getattr(args, "keyfile", None),
            client_ca=getattr(args, "client_ca", None),
            workers=getattr(args, "workers", None),
        )
        level = settings.log_level.lower()
        if level != "trace" and not isinstance(logging.getLevelName(level.upper()), int):  # trace: uvicorn's
            raise ValueError(f"unknown log level {settings.log_level!r} (use trace, debug, info, warning, error)")
        if settings.log_format not in FORMATS:
            raise ValueError(f"unknown log format {settings.log_format!r} (use {' or '.join(FORMATS)})")
    except ValueError as exc:
        print(f"fhir-exchange: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder of the embedded SQLite store (env FHIR_EXCHANGE_DATA_DIR)")
    p.add_argument("--store", help="store URL: sqlite:///file.db or mongodb://... (env FHIR_EXCHANGE_STORE_URL)")


def base_url(settings: Settings) -> str:
    """The FHIR base clients call: ``PUBLIC_BASE_URL``, else the listening address."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    scheme = "https" if settings.certfile else "http"
    return f"{scheme}://{settings.host}:{settings.port}{settings.base_path}"
