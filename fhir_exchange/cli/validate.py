"""``fhir-exchange validate``: files checked offline the way the server checks a write and ``$validate``."""

from __future__ import annotations

import argparse
import sys

import orjson

from fhir_exchange.cli.data import is_resource, walk
from fhir_exchange.settings import Settings


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate files the way the server does on write and in $validate, without a server."""
    from fhir_exchange.api.app import profile_folders
    from fhir_exchange.consult.profiles import consult_profiles
    from fhir_exchange.definitions import Definitions
    from fhir_exchange.definitions.expressions import expression_issues
    from fhir_exchange.fhir import jsonio
    from fhir_exchange.validation import Validator

    settings = Settings.from_env()
    definitions = Definitions.load([*profile_folders(), *settings.packages, *args.package],
                                   cache_dir=settings.resolved_cache_dir)
    for url in args.profile:
        if definitions.resolve(url) is None:
            print(f"unknown profile: {url}", file=sys.stderr)
            return 2
    validator = Validator(definitions)
    counts = {"error": 0, "warning": 0, "information": 0}
    checked = failed = skipped = 0
    for f, explicit in walk(args.paths):
        try:
            doc = jsonio.loads(f.read_bytes())
        except (orjson.JSONDecodeError, OSError) as exc:
            print(f"{f}: fatal: {exc}")
            checked += 1
            failed += 1
            continue
        if not explicit and not is_resource(doc):  # e.g. a manifest.json next to the examples
            print(f"{f}: skipped: not a FHIR resource (no resourceType)", file=sys.stderr)
            skipped += 1
            continue
        checked += 1
        if not isinstance(doc, dict):
            print(f"{f}: fatal: not a FHIR resource (a JSON object)")
            failed += 1
            continue
        profiles = [*args.profile, *(consult_profiles(doc) if settings.consult_profiles else [])]
        # The write rules of conformance resources too: a SearchParameter the server would refuse fails here.
        issues = [*validator.validate(doc, profiles=profiles), *expression_issues(doc)]
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        failed += bool(errors)
        for i in issues:
            sev = "error" if i.severity == "fatal" else i.severity
            counts[sev] = counts.get(sev, 0) + 1
            if args.quiet and sev != "error":
                continue
            where = f" @ {i.expression[0]}" if i.expression else ""
            print(f"{f}: {i.severity}: {i.diagnostics}{where}")
        if not errors and not args.quiet:
            print(f"{f}: valid")
    print(f"{checked} files: {checked - failed} valid, {failed} with errors "
          f"({counts['error']} errors, {counts['warning']} warnings)"
          + (f"; {skipped} skipped (not FHIR resources)" if skipped else ""))
    return 1 if failed else 0
