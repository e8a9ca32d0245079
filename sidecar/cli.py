"""The `sidecar` command: serve, bootstrap, check, explain, and the rules/users commands for scripts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from pydantic import ValidationError

from sidecar import __version__
from sidecar.directory import DirectoryError
from sidecar.errors import SidecarError
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings

CLI_ACTOR = "cli"


class _NoStartupTraceback(logging.Filter):
    """uvicorn logs the traceback Starlette hands over with a failed start-up; a StartupFailure was already said in
    one line by the lifespan, and `cmd_serve` prints it again as its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "StartupFailure" not in record.getMessage()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from sidecar import logs
    from sidecar.app import create_app
    from sidecar.storage_errors import prepare_to_serve

    logs.configure(settings.log_level)
    # What would stop the start (a read-only or foreign-owned data dir, a damaged database) is one line and exit 2
    # here, before anything listens. A full disk is not: the server starts and serves what it knows.
    problem = prepare_to_serve(settings)
    if problem is not None:
        print(f"error: {problem.operator}", file=sys.stderr)
        return 2
    logging.getLogger("sidecar").info(
        "starting sidecar %s in %s mode on %s:%s", __version__, settings.mode, settings.host, settings.port
    )
    app = create_app(settings, freeze_startup_objects=True)
    quiet = _NoStartupTraceback()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        # proxy_headers off: the TCP peer must stay the peer, or X-Forwarded-For would decide who is a trusted proxy.
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            proxy_headers=False,
            log_config=None,
            server_header=False,
            access_log=False,
            # The HTTP parser and event loop the request-smuggling tests (tests/security/) hold to: with others, a
            # pipelined request after conflicting framing headers is handled differently.
            http="h11",
            loop="asyncio",
        )
    except SystemExit:  # uvicorn's way of saying the start failed
        failure = getattr(app.state, "startup_failure", None)
        if not failure:
            raise  # its own reason (the port is taken): its log says why
        # The data dir failed between the check above and the start (another process, the disk filling up).
        print(f"error: {failure}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    return 0


def cmd_bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    if args.authentik:
        from sidecar.authentik_bootstrap import bootstrap_authentik

        bootstrap_authentik(settings, recovery=args.recovery, force_brand=args.force_brand, out=print)
        return 0
    if args.recovery or args.force_brand:
        print("error: --recovery and --force-brand go with --authentik", file=sys.stderr)
        return 2
    if args.setup_secret and settings.mode != "local":
        print("error: --setup-secret is for local mode; in authentik mode admins come from Authentik", file=sys.stderr)
        return 2
    from sidecar.bootstrap import bootstrap

    bootstrap(settings, out=print, setup_secret=args.setup_secret)
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.checks import run_checks

    problems = 0
    for ok, line in run_checks(settings):
        print(("ok       " if ok else "PROBLEM  ") + line)
        problems += not ok
    return 1 if problems else 0


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    groups = [g for g in args.groups.split(",") if g] if args.groups is not None else None
    result = run_with_services(
        settings, lambda s: s.rules.explain(args.path, args.action, username=args.user, groups=groups)
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rule = result["rule"]
        print(f"{str(result['decision']).upper()}: {result['user']} ({result['role']}) {args.action} {args.path}")
        print(f"  why:    {result['reason']}")
        print(f"  groups: {', '.join(result['groups']) or '(none with the prefix)'}")  # type: ignore[arg-type]
        print(f"  rule:   {json.dumps(rule) if rule else '(none)'}")
    return 0 if result["allowed"] else 3


def cmd_rules(settings: Settings, args: argparse.Namespace) -> int:
    if args.rules_command == "list":
        for pattern, groups in run_with_services(settings, _rules_list).items():
            print(f"{pattern}\t{','.join(groups)}")
    elif args.rules_command == "set":
        pattern, groups = run_with_services(settings, lambda s: s.rules.set(args.pattern, args.groups, CLI_ACTOR))
        print(f"set {pattern} -> {', '.join(groups)}")
    else:
        run_with_services(settings, _rules_delete(args.pattern))
        print(f"deleted {args.pattern}")
    return 0


async def _rules_list(services: Services) -> dict[str, list[str]]:
    return services.rules.all()


def _rules_delete(pattern: str) -> Callable[[Services], Awaitable[None]]:
    async def work(services: Services) -> None:
        services.rules.delete(pattern, CLI_ACTOR)

    return work


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    if args.users_command == "list":
        page = run_with_services(settings, lambda s: s.users.list_users(args.search, 1, 100))
        for user in page.users:
            state = "active" if user.is_active else "inactive"
            print(f"{user.username}\t{state}\t{','.join(user.groups)}")
        if page.total > len(page.users):
            print(f"... {page.total - len(page.users)} more; narrow with --search", file=sys.stderr)
        return 0
    if settings.mode != "local":
        print(
            f"error: `sidecar users {args.users_command}` works in local mode; in authentik mode manage people in "
            "Authentik",
            file=sys.stderr,
        )
        return 2
    if args.users_command == "set-password":
        return _set_password(settings, args)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    user = run_with_services(settings, lambda s: s.users.add_user(args.username, args.group, password, CLI_ACTOR))
    print(f"added {user.username} to {', '.join(user.groups) or 'no group'}")
    return 0


def _set_password(settings: Settings, args: argparse.Namespace) -> int:
    """The shell's way back in: a new password, and with --admin an active admin again (never over HTTP)."""
    if not args.password_stdin:
        print("error: give the password on stdin with --password-stdin", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")

    async def work(services: Services) -> None:
        from sidecar.first_admin import admin_group

        await services.users.set_password(args.username, password, CLI_ACTOR)
        if args.admin:
            group = admin_group(settings)
            await services.users.create_group(group, CLI_ACTOR)
            await services.users.set_membership(args.username, group, True, CLI_ACTOR)
            await services.users.set_active(args.username, True, CLI_ACTOR)

    run_with_services(settings, work)
    print(f"set the password of {args.username}" + (" and made them an active admin" if args.admin else ""))
    return 0


def cmd_rotate_keys(settings: Settings, args: argparse.Namespace) -> int:
    async def work(services: Services) -> tuple[str, float]:
        refresh = services.mediamtx.refresh_jwks if services.mediamtx is not None else None
        return await services.tokens.rotate(refresh)

    kid, sign_from = run_with_services(settings, work)
    print(f"new signing key {kid}")
    if sign_from <= time.time():
        print("MediaMTX refetched the JWKS; the new key signs from now on")
    else:
        print(
            "MediaMTX was not asked to refetch the JWKS (SIDECAR_MEDIAMTX_API_URL unset or unreachable); "
            f"the new key signs from {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(sign_from))}"
        )
    print("previous keys stay published until the last token they signed has expired")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.demo import run_demo

    return run_demo(port=args.port)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="sidecar", description="MediaMTX access sidecar")
    root.add_argument("--version", action="version", version=__version__)
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the web service").set_defaults(func=cmd_serve)
    boot = sub.add_parser("bootstrap", help="create data dir, secrets, standard groups, first admin")
    boot.add_argument("--authentik", action="store_true", help="instead: create the standard groups in Authentik")
    boot.add_argument(
        "--recovery", action="store_true", help="with --authentik: also a password-recovery flow on the default brand"
    )
    boot.add_argument(
        "--force-brand", action="store_true", help="with --recovery: replace the brand's existing recovery flow"
    )
    boot.add_argument(
        "--setup-secret",
        action="store_true",
        help="local mode: instead of creating the first admin, print a one-time secret to create it on the sign-in "
        "page (only for a data dir that has never had an account)",
    )
    boot.set_defaults(func=cmd_bootstrap)
    sub.add_parser("check", help="check settings, secrets, storage and the Caddy version").set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="say whether USER may do ACTION on PATH, and why")
    explain.add_argument("user")
    explain.add_argument("path")
    explain.add_argument("action", nargs="?", default="read")
    explain.add_argument("--groups", help="preview a comma-separated group set instead of the user's groups")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=cmd_explain)

    rules = sub.add_parser("rules", help="path rules").add_subparsers(dest="rules_command", required=True)
    rules.add_parser("list")
    rule_set = rules.add_parser("set")
    rule_set.add_argument("pattern")
    rule_set.add_argument("groups", nargs="+")
    rules.add_parser("delete").add_argument("pattern")
    for name in ("list", "set", "delete"):
        rules.choices[name].set_defaults(func=cmd_rules)

    users = sub.add_parser("users", help="people (add: local mode)").add_subparsers(dest="users_command", required=True)
    users.add_parser("list").add_argument("--search", default="")
    add = users.add_parser("add")
    add.add_argument("username")
    add.add_argument("--group", action="append", default=[], help="a prefixed group; repeat for more")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    reset = users.add_parser("set-password", help="set a password from the shell (local mode)")
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    reset.add_argument("--admin", action="store_true", help="also make the person an active admin (recovery)")
    for name in ("list", "add", "set-password"):
        users.choices[name].set_defaults(func=cmd_users)

    sub.add_parser("rotate-keys", help="add a new token signing key and retire the old ones safely").set_defaults(
        func=cmd_rotate_keys
    )

    demo = sub.add_parser("demo", help="run the local-mode demo: Caddy + demo editor + sidecar")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(func=cmd_demo)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        for problem in error.errors():
            print(f"error: SIDECAR_{'_'.join(map(str, problem['loc'])).upper()}: {problem['msg']}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(settings, args)
    except (SidecarError, DirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # A full, read-only or foreign-owned data dir, a locked or damaged database: one sentence saying what to fix
        # (the same `sidecar check` prints), not a traceback. Anything else is a bug and keeps its traceback.
        from sidecar.storage_errors import storage_problem

        found = storage_problem(error, settings.data_dir, settings.database_path)
        if found is None:
            raise
        print(f"error: {found.operator}", file=sys.stderr)
        return 2
    return code
