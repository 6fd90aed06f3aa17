"""Command line: ``fhir-exchange serve | load | reindex | migrate | backup | restore | validate | institution |
client | network | user | demo`` (the ``fhir-exchange`` entry point is :func:`main`).

This module wires the argument parser; the commands live by concept beside it: ``serve``, ``admin``
(institutions, clients, networks, portal users, the demo), ``data`` (load, reindex, migrate, backup,
restore), ``validate``; ``options`` and ``progress`` are what they share.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fhir_exchange.cli.admin import (
    cmd_client_add,
    cmd_client_disable,
    cmd_client_enable,
    cmd_client_list,
    cmd_demo,
    cmd_institution_add,
    cmd_institution_list,
    cmd_network_add,
    cmd_user_add,
    cmd_user_disable,
    cmd_user_enable,
    cmd_user_list,
    cmd_user_unlock,
)
from fhir_exchange.cli.data import cmd_backup, cmd_load, cmd_migrate, cmd_reindex, cmd_restore
from fhir_exchange.cli.options import add_store_options
from fhir_exchange.cli.serve import cmd_serve
from fhir_exchange.cli.validate import cmd_validate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-exchange", description="FHIR R4 server for remote consultation")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the FHIR API at http://HOST:PORT/fhir")
    serve.add_argument("--host", help="interface (env FHIR_EXCHANGE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env FHIR_EXCHANGE_PORT, default 8080)")
    serve.add_argument("--no-auth", action="store_true",
                       help="serve without authentication: every caller acts as the system (development only; "
                            "env FHIR_EXCHANGE_AUTH=off)")
    serve.add_argument("--certfile", help="serve TLS with this certificate (PEM; env FHIR_EXCHANGE_CERTFILE)")
    serve.add_argument("--keyfile", help="the certificate's private key (PEM; env FHIR_EXCHANGE_KEYFILE)")
    serve.add_argument("--client-ca", help="verify client certificates against these CAs (PEM) and map a "
                                           "registered subject to its client (env FHIR_EXCHANGE_CLIENT_CA)")
    serve.add_argument("--workers", type=int, help="worker processes on the one store (env FHIR_EXCHANGE_WORKERS; "
                                                   "default: one per core; 1: a single process)")
    add_store_options(serve)
    serve.set_defaults(func=cmd_serve)
    institution = sub.add_parser("institution", help="register institutions of the network")
    isub = institution.add_subparsers(dest="action", required=True)
    iadd = isub.add_parser("add", help="register an institution; prints its organization id as JSON")
    iadd.add_argument("--name", required=True)
    iadd.add_argument("--hira-id", required=True, help="HIRA institution identifier (8 digits)")
    iadd.add_argument("--connection", required=True, choices=["portal", "emr", "exchange"])
    iadd.add_argument("--endpoint-address", help="the institution's endpoint URL (EMR or exchange system base)")
    add_store_options(iadd)
    iadd.set_defaults(func=cmd_institution_add)
    ilist = isub.add_parser("list", help="the registered institutions, as JSON lines")
    add_store_options(ilist)
    ilist.set_defaults(func=cmd_institution_list)
    client = sub.add_parser("client", help="register and disable system clients (SMART Backend Services)")
    csub = client.add_subparsers(dest="action", required=True)
    cadd = csub.add_parser("add", help="register a client of an institution; prints client_id and token_endpoint")
    cadd.add_argument("--institution", required=True, help="the institution's Organization id")
    cadd.add_argument("--jwks", help="file holding the client's public JWKS (RS384 or ES384 keys)")
    cadd.add_argument("--scope", action="append", default=[],
                      help="a SMART v2 system scope it may be granted (repeatable; default system/*.cruds)")
    cadd.add_argument("--admin", action="store_true",
                      help="may manage conformance resources, run $reindex and register institutions/clients")
    cadd.add_argument("--cert-subject", help="subject of the client certificate it may also authenticate with")
    add_store_options(cadd)
    cadd.set_defaults(func=cmd_client_add)
    cdis = csub.add_parser("disable", help="refuse the client's tokens from now on")
    cdis.add_argument("client_id")
    add_store_options(cdis)
    cdis.set_defaults(func=cmd_client_disable)
    cen = csub.add_parser("enable", help="accept the client's tokens again")
    cen.add_argument("client_id")
    add_store_options(cen)
    cen.set_defaults(func=cmd_client_enable)
    clist = csub.add_parser("list", help="the registered clients, as JSON lines (keys not shown)")
    add_store_options(clist)
    clist.set_defaults(func=cmd_client_list)
    network = sub.add_parser("network", help="consult networks: which partner asks which hub")
    nsub = network.add_subparsers(dest="action", required=True)
    nadd = nsub.add_parser("add", help="affiliate a partner with a hub (an OrganizationAffiliation written as the "
                                       "hub); prints its id as JSON")
    nadd.add_argument("--hub", required=True, help="the hub's Organization id (a registered institution)")
    nadd.add_argument("--partner", required=True, help="the partner's Organization id (a registered institution)")
    nadd.add_argument("--specialty", action="append", default=[], metavar="CODE",
                      help="a HIRA medical department code the hub offers the partner (repeatable; default: all)")
    add_store_options(nadd)
    nadd.set_defaults(func=cmd_network_add)
    user = sub.add_parser("user", help="portal accounts: practitioners of an institution who sign in at /portal")
    usub = user.add_subparsers(dest="action", required=True)
    uadd = usub.add_parser("add", help="make a portal account (and its Practitioner and PractitionerRole unless "
                                       "--practitioner-role names one); reads the password from standard input")
    uadd.add_argument("--institution", required=True, help="the institution's Organization id")
    uadd.add_argument("--username", required=True, help="2 to 64 characters: lower case letters, digits, . _ @ -")
    uadd.add_argument("--password-stdin", action="store_true", help="read the password (one line) from stdin")
    uadd.add_argument("--practitioner-role", help="an existing PractitionerRole of the institution the user acts as")
    uadd.add_argument("--name", help="the practitioner's name as shown on pages (default: the username)")
    uadd.add_argument("--department", help="HIRA medical department code of a new PractitionerRole (e.g. 01)")
    add_store_options(uadd)
    uadd.set_defaults(func=cmd_user_add)
    for action, func, text in (("disable", cmd_user_disable, "refuse the account's sign-ins and end its sessions"),
                               ("enable", cmd_user_enable, "let a disabled account sign in again"),
                               ("unlock", cmd_user_unlock, "end a lockout after repeated wrong passwords")):
        uact = usub.add_parser(action, help=text)
        uact.add_argument("username")
        add_store_options(uact)
        uact.set_defaults(func=func)
    ulist = usub.add_parser("list", help="the portal accounts, as JSON lines (no password hashes)")
    add_store_options(ulist)
    ulist.set_defaults(func=cmd_user_list)
    demo = sub.add_parser("demo", help="seed three pilot-like networks and walk two consults end to end "
                                       "(use a fresh --data-dir)")
    add_store_options(demo)
    demo.set_defaults(func=cmd_demo)
    load = sub.add_parser("load", help="load resources and Bundles (files or folders) into the store")
    load.add_argument("paths", nargs="+")
    add_store_options(load)
    load.set_defaults(func=cmd_load)
    reindex = sub.add_parser("reindex", help="re-extract search index values (after SearchParameter changes)")
    reindex.add_argument("--type", help="only this resource type")
    add_store_options(reindex)
    reindex.set_defaults(func=cmd_reindex)
    migrate = sub.add_parser("migrate", help="copy every resource and version to another store, then verify")
    migrate.add_argument("--from", dest="from_url", required=True, help="source store URL, e.g. sqlite:///data/fhir.db")
    migrate.add_argument("--to", dest="to_url", required=True, help="target store URL, e.g. mongodb://host/fhir")
    migrate.set_defaults(func=cmd_migrate)
    bak = sub.add_parser("backup", help="copy the live SQLite store and audit store into a new folder (the server "
                                        "may keep running); MongoDB: mongodump, see docs/operations.md")
    bak.add_argument("dest", help="a new or empty folder")
    bak.add_argument("--pages-per-step", type=int, default=1024,
                     help="database pages copied per step (default 1024, 4 MiB): the progress bar's resolution")
    add_store_options(bak)
    bak.set_defaults(func=cmd_backup)
    res = sub.add_parser("restore", help="replace the SQLite store and audit store by a backup (stop the server first)")
    res.add_argument("src", help="a folder written by fhir-exchange backup")
    res.add_argument("--skip-audit", action="store_true",
                     help="keep the current audit store (restore the resources only)")
    add_store_options(res)
    res.set_defaults(func=cmd_restore)
    validate = sub.add_parser("validate", help="validate resources offline, as $validate does; exit 1 on errors")
    validate.add_argument("paths", nargs="+", help="JSON files or folders")
    validate.add_argument("--profile", action="append", default=[], help="canonical URL of a profile to check")
    validate.add_argument("--package", action="append", default=[],
                          help="extra FHIR package (.tgz or folder) or folder of conformance resources")
    validate.add_argument("--quiet", action="store_true", help="print errors only")
    validate.set_defaults(func=cmd_validate)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
