"""`adu validate [FOLDER]`: check every component YAML file without building or connecting anything.

Prints one line per problem, `file:line: field: message` (an unknown key comes with the closest valid
keys), and exits 1 when there is any; exits 0 with a one-line summary otherwise. FOLDER defaults to
ADU_DEFS_DIR, else the packaged demo. Unlike `dg check yaml`, it reads every file, not one per type.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _validate(args: argparse.Namespace) -> int:
    from adu_assets.defs_loader import validate_folder

    folder = Path(args.folder) if args.folder else None
    if folder is not None and not folder.is_dir():
        print(f"{folder}: not a folder: name the folder that holds your defs.yaml files", file=sys.stderr)
        return 2
    files, problems = validate_folder(folder)
    for problem in problems:
        print(problem)
    if problems:
        broken = len({p.file for p in problems})
        print(f"{len(problems)} problem(s) in {broken} of {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"{len(files)} component file(s) OK", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "validate", help="check every component YAML file: file:line: field: message, exit 1 on any"
    )
    p.add_argument("folder", nargs="?", default=None, help="defs folder (default: ADU_DEFS_DIR or the demo)")
    p.set_defaults(func=_validate)
