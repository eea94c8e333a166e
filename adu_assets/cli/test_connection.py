"""`adu test-connection PATH/defs.yaml`: open every source and destination the file names, before a run does.

One line per connection: `ok` with what was found, or `FAILED` with one clear reason. Exit 1 if any failed.
Passwords and tokens are resolved exactly as a run resolves them; none is ever printed (every message goes
through the redactor, and URLs lose credential-carrying parameters).

  DatabaseExport  the source database: log in, list the schema's base tables, and find the listed tables
  ApiIngest       the API: fetch the first page with the task's auth; the destination: log in, find the table
  FileDrop        the folder: it exists and can be read; count the files that match the glob
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("adu.test_connection")


def _reason(e: BaseException) -> str:
    from adu_assets.secrets import redact

    text = redact(str(e)).strip() or type(e).__name__
    # One clear reason: the first line says what failed; drivers append hints and context below it.
    first = text.splitlines()[0].strip()
    return first if len(first) <= 400 else first[:397] + "..."


def check_source(component: Any) -> str:
    from adu_assets.sources.databases import discover

    tables = discover(component.connection, component.schema, label=component.name)
    names = {t.name for t in tables}
    found = f"{len(tables)} base tables in schema {component.schema}"
    if component.tables:
        missing = [t.name for t in component.tables if t.name not in names]
        if missing:
            raise LookupError(f"{found}, but not {', '.join(missing)} (listed under tables:)")
    return found


def check_api(component: Any) -> str:
    from adu_assets.cli.preview import fetch_first_page, partition_variables

    day = datetime.now(UTC).date() - timedelta(days=1)
    page = fetch_first_page(component.request, partition_variables(day))
    return f"{component.request.method} {page.url}: {len(page.records)} records on the first page"


def check_destination(component: Any) -> str:
    from adu_assets.io_managers.upsert.base import open_dialect

    dest = component.destination
    dialect = open_dialect(dest, log)
    try:
        schema, table, columns = dialect.catalog()
    finally:
        try:
            dialect.rollback()
        finally:
            dialect.close()
    label = f"{schema}.{table}" if schema else table
    return f"table {label} has {len(columns)} columns"


def check_folder(component: Any) -> str:
    folder = Path(os.path.expandvars(os.path.expanduser(component.folder)))
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise PermissionError(f"folder {folder} cannot be read by this user")
    matching = [p for p in folder.glob(component.glob) if p.is_file()]
    return f"folder {folder}: {len(matching)} files match {component.glob!r}"


def checks_for(type_name: str, component: Any) -> list[tuple[str, Callable[[Any], str]]]:
    if type_name == "adu_assets.DatabaseExport":
        return [(f"source {component.connection.describe()}", check_source)]
    if type_name == "adu_assets.ApiIngest":
        from adu_assets.sources.http import safe_url

        return [
            (f"api {safe_url(component.request.url)}", check_api),
            (f"destination {component.destination.connection.describe()}", check_destination),
        ]
    return [("folder", check_folder)]


def test_connection(path: Path, out: Any = sys.stdout) -> int:
    from adu_assets.cli.defs_file import DefsFileError, read_defs
    from adu_assets.secrets import install_log_redaction, redact

    install_log_redaction()
    try:
        entries = read_defs(path)
    except DefsFileError as e:
        print(f"adu test-connection: {e}", file=sys.stderr)
        return 1
    failed = 0
    for entry in entries:
        for label, check in checks_for(entry.type_name, entry.component):
            try:
                detail = check(entry.component)
            except Exception as e:
                failed += 1
                print(redact(f"{entry.name}: {label}: FAILED: {_reason(e)}"), file=out)
            else:
                print(redact(f"{entry.name}: {label}: ok ({detail})"), file=out)
    return 1 if failed else 0


# Not a pytest test, whatever its name says.
test_connection.__test__ = False  # type: ignore[attr-defined]


def _run(args: argparse.Namespace) -> int:
    return test_connection(Path(args.path))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "test-connection",
        help="open every source and destination a defs.yaml names; print ok or the reason",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="the component's defs.yaml (or its folder)")
    p.set_defaults(func=_run)
