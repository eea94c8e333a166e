"""`adu`: the few things Dagster's own CLI does not do.

adu secrets generate-key            print a new Fernet key (put it first in ADU_FERNET_KEY)
adu secrets encrypt [--stdin]       encrypt a password (prompted, or from stdin) with the newest key
adu secrets rotate TOKEN            re-encrypt a token under the newest key
adu refresh-state                   re-run table discovery for every DatabaseExport and cache it
adu validate [FOLDER]               check every component YAML file: file:line: field: message, exit 1 on any
adu demo [--partition YYYY-MM-DD]   generate the demo sources and materialize the demo for one day
adu sql "SELECT ..."                query the warehouse (read-only, one snapshot)
adu preview PATH/defs.yaml          fetch one page of an API task; print its fields and suggested mappings
adu test-connection PATH/defs.yaml  open every source and destination the file names; ok or the reason
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

    from adu_assets.defs_loader import component_tree, load_components

    tree = component_tree()
    # File by file: a broken YAML file is reported and does not stop the others' refresh.
    components, problems = load_components()
    for problem in problems:
        print(problem, file=sys.stderr)
    refreshed = 0
    for component in components:
        if not isinstance(component, dg.StateBackedComponent):
            continue
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
    return 1 if problems else 0


def _demo(args: argparse.Namespace) -> int:
    from adu_assets.demo import demo_summary, ensure_demo_sources
    from adu_assets.settings import data_root

    folder = ensure_demo_sources()
    root = data_root()
    log_path = root / "logs" / f"demo-{args.partition}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"demo sources in {folder}")
    print(f"materializing {args.select} for {args.partition} (full log: {log_path})", flush=True)
    cmd = [
        sys.executable,
        # Dagster points every `dagster asset materialize` at `dg launch`, which needs a dg project folder;
        # an installed package has none, so this form stays and its notice is left out.
        "-W",
        "ignore:Function `asset_materialize_command` is superseded:FutureWarning",
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
    # Dagster's own console output is ~100 lines ending in DEBUG events: it goes to the log file, and
    # the terminal gets one line per finished step, then a summary of what landed where.
    failed: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            for event, mark in (("STEP_SUCCESS", "ok    "), ("STEP_FAILURE", "FAILED")):
                if f" - {event} - " in line:
                    step = line.split(f" - {event} - ")[0].rsplit(" - ", 1)[-1].strip().replace("__", "/")
                    print(f"  {mark} {step}", flush=True)
                    if event == "STEP_FAILURE":
                        failed.append(step)
        code = proc.wait()
    if code != 0 or failed:
        print(f"adu demo: {len(failed) or 'the'} step(s) failed; the reasons are in {log_path}", file=sys.stderr)
        return code or 1
    print()
    print(demo_summary(root, args.partition))
    return 0


# One module per command group (adu_assets/cli/<name>.py); add yours here.
COMMAND_MODULES: list[str] = ["sql", "validate", "preview", "test_connection", "worker"]


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
