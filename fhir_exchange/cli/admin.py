"""``fhir-exchange institution | client | network | user | demo``: the registry of the exchange (institutions,
their system clients, consult networks, portal accounts), written to the store a server uses or will use."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from fhir_exchange.cli.options import base_url, settings_from_args
from fhir_exchange.settings import Settings

# -- institutions and clients ---------------------------------------------------------------------

def _admin_store(args: argparse.Namespace) -> tuple[Settings, Any]:
    from fhir_exchange.api.app import build_router, build_services, load_definitions

    settings = settings_from_args(args)
    svc = build_services(settings, load_definitions(settings))
    return settings, build_router(svc)


def _run_admin(args: argparse.Namespace, work: Callable[[Settings, Any, Any], Awaitable[Any]]) -> int:
    from fhir_exchange.api.enrolment import EnrolmentError
    from fhir_exchange.security.registry import Registry

    async def go() -> int:
        settings, router = _admin_store(args)
        svc = router.services
        await svc.open()
        try:
            result = await work(settings, router, Registry(svc.store))
        except EnrolmentError as exc:
            print(f"fhir-exchange: {exc}", file=sys.stderr)
            return 1
        finally:
            await svc.close()
        if isinstance(result, list):
            for item in result:
                print(orjson.dumps(item).decode())
        elif result is not None:
            print(orjson.dumps(result).decode())
        return 0

    return asyncio.run(go())


def cmd_institution_add(args: argparse.Namespace) -> int:
    from fhir_exchange.api.enrolment import add_institution

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return await add_institution(router, registry, name=args.name, hira_id=args.hira_id,
                                     connection=args.connection, endpoint_address=args.endpoint_address,
                                     base_url=base_url(settings))

    return _run_admin(args, work)


def cmd_institution_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return [asdict(i) for i in await registry.institutions(_now(router))]

    return _run_admin(args, work)


def _now(router: Any) -> str:
    from fhir_exchange.clock import instant

    return instant(router.services.clock.now())


def cmd_client_add(args: argparse.Namespace) -> int:
    from fhir_exchange.api.auth import TOKEN_PATH
    from fhir_exchange.api.enrolment import EnrolmentError, add_client

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        jwks = None
        if args.jwks:
            try:
                jwks = orjson.loads(Path(args.jwks).read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise EnrolmentError(f"--jwks {args.jwks}: {exc}") from None
        return await add_client(registry, institution=args.institution, jwks=jwks, scopes=args.scope,
                                admin=args.admin, cert_subject=args.cert_subject,
                                token_endpoint=f"{base_url(settings)}/{TOKEN_PATH}", now=_now(router))

    return _run_admin(args, work)


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    from fhir_exchange.api.enrolment import EnrolmentError

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        client = await registry.set_disabled(args.client_id, disabled, _now(router))
        if client is None:
            raise EnrolmentError(f"No client {args.client_id}")
        return {"client_id": client.client_id, "disabled": client.disabled}

    return _run_admin(args, work)


def cmd_client_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_client_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def cmd_client_list(args: argparse.Namespace) -> int:
    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return [{k: v for k, v in c.to_json().items() if k != "jwks"} for c in await registry.clients(_now(router))]

    return _run_admin(args, work)


def cmd_network_add(args: argparse.Namespace) -> int:
    from fhir_exchange.api.enrolment import add_network

    async def work(settings: Settings, router: Any, registry: Any) -> Any:
        return await add_network(router, registry, hub=args.hub, partner=args.partner, specialties=args.specialty,
                                 base_url=base_url(settings))

    return _run_admin(args, work)


# -- portal users ---------------------------------------------------------------------------------

def _users(work: Callable[[Settings, Any, Any, Any], Awaitable[Any]]) -> Callable[[Settings, Any, Any], Awaitable[Any]]:
    """Run ``work`` with the portal's accounts on the same store; an AccountError is the command's error."""
    from fhir_exchange.api.enrolment import EnrolmentError
    from fhir_exchange.security.users import AccountError, Users

    async def run(settings: Settings, router: Any, registry: Any) -> Any:
        try:
            return await work(settings, router, registry, Users(router.services.store))
        except AccountError as exc:
            raise EnrolmentError(str(exc)) from None

    return run


def cmd_user_add(args: argparse.Namespace) -> int:
    from fhir_exchange.portal.accounts import add_user

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else ""
    if not args.password_stdin:
        print("fhir-exchange: give the password on standard input with --password-stdin", file=sys.stderr)
        return 2

    async def work(settings: Settings, router: Any, registry: Any, users: Any) -> Any:
        return await add_user(router, registry, users, institution=args.institution, username=args.username,
                              password=password, name=args.name, practitioner_role=args.practitioner_role,
                              department=args.department, base_url=base_url(settings))

    return _run_admin(args, _users(work))


def _user_change(args: argparse.Namespace, change: str) -> int:
    async def work(settings: Settings, router: Any, registry: Any, users: Any) -> Any:
        now = _now(router)
        if change == "unlock":
            user = await users.unlock(args.username, now)
        else:
            user = await users.set_disabled(args.username, change == "disable", now)
        return user.public()

    return _run_admin(args, _users(work))


def cmd_user_disable(args: argparse.Namespace) -> int:
    return _user_change(args, "disable")


def cmd_user_enable(args: argparse.Namespace) -> int:
    return _user_change(args, "enable")


def cmd_user_unlock(args: argparse.Namespace) -> int:
    return _user_change(args, "unlock")


def cmd_user_list(args: argparse.Namespace) -> int:
    async def work(settings: Settings, router: Any, registry: Any, users: Any) -> Any:
        return [u.public() for u in await users.list(_now(router))]

    return _run_admin(args, _users(work))


def cmd_demo(args: argparse.Namespace) -> int:
    from fhir_exchange.api.demo import DemoError, run_demo

    settings = settings_from_args(args)
    try:
        asyncio.run(run_demo(settings, base_url(settings), out=print))
    except DemoError as exc:
        print(f"fhir-exchange: {exc}", file=sys.stderr)
        return 1
    return 0
