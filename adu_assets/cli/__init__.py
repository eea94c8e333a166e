"""`adu`: the few things Dagster's own CLI does not do.

adu secrets generate-key            print a new Fernet key (put it first in ADU_FERNET_KEY)
adu secrets encrypt [--stdin]       encrypt a password (prompted, or from stdin) with the newest key
adu secrets rotate TOKEN            re-encrypt a token under the newest key
adu refresh-state                   re-run table discovery for every DatabaseExport and cache it
adu demo [--partition YYYY-MM-DD]   generate the demo sources and materialize the demo for one day
adu sql "SELECT ..."                query the warehouse (read-only, one snapshot)
adu worker [--concurrency N]        a Celery worker for ADU_EXECUTOR=celery (see adu_assets/scale_out.py)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import os
import subprocess
import sys


def _secrets(args: argparse.Namespace) -> int:
    from adu_assets import secrets

    try:
        if args.action == "generate-key":
            print(secrets.generate_key())
        elif args.action == "encrypt":
            value = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("value to encrypt: ")
            print(secrets.encrypt(value))
        elif args.action == "rotate":
            print(secrets.rotate(args.token))
    except secrets.SecretError as e:
        print(f"adu secrets: {e}", file=sys.stderr)
        return 2
    return 0


def _refresh_state(args: argparse.Namespace) -> int:
    import dagster as dg

    from adu_assets.defs_loader import component_tree

    tree = component_tree()
    refreshed = 0
    for component in tree.get_all_components(of_type=dg.StateBackedComponent):  # type: ignore[type-abstract]
        key = component.defs_state_config.key
        try:
            asyncio.run(component.refresh_state(tree.project_root))
        except Exception as e:
            from adu_assets.secrets import redact

            print(f"{key}: discovery failed: {redact(str(e))}", file=sys.stderr)
            return 1
        print(f"{key}: refreshed")
        refreshed += 1
    print(f"{refreshed} component(s) refreshed")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from adu_assets.demo import ensure_demo_sources

    folder = ensure_demo_sources()
    print(f"demo sources in {folder}")
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "adu_assets.definitions",
        "--select",
        args.select,
        "--partition",
        args.partition,
    ]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=os.environ.copy())


# One module per command group (adu_assets/cli/<name>.py); add yours here.
COMMAND_MODULES: list[str] = ["sql", "worker"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adu", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("secrets", help="Fernet keys and encrypted credentials")
    s_sub = s.add_subparsers(dest="action", required=True)
    s_sub.add_parser("generate-key")
    enc = s_sub.add_parser("encrypt")
    enc.add_argument("--stdin", action="store_true", help="read the value from standard input")
    rot = s_sub.add_parser("rotate")
    rot.add_argument("token")
    s.set_defaults(func=_secrets)

    r = sub.add_parser("refresh-state", help="re-run discovery and cache it as defs state")
    r.set_defaults(func=_refresh_state)

    d = sub.add_parser("demo", help="materialize the embedded demo for one day")
    d.add_argument("--partition", default="2026-03-01")
    d.add_argument("--select", default="group:shop or group:inventory")
    d.set_defaults(func=_demo)

    # Further commands live in their own modules under adu_assets/cli/, each with
    # `register(subparsers)` that adds its parser and sets `func`. Imports stay inside the handlers.
    for module in COMMAND_MODULES:
        importlib.import_module(f"adu_assets.cli.{module}").register(sub)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
