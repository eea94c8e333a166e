"""Read a component YAML file (`defs.yaml`) the way Dagster does, for the commands that act on one file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPONENT_TYPES = ("adu_assets.DatabaseExport", "adu_assets.ApiIngest", "adu_assets.FileDrop")


class DefsFileError(ValueError):
    """The file cannot be used: the message names the file, the component and the field to fix."""


@dataclass
class DefsEntry:
    type_name: str
    name: str
    component: Any


def _explain(e: BaseException) -> str:
    """What is wrong, by field, without the offending values (pydantic would echo a plain password back)."""
    import re

    import pydantic

    from adu_assets.secrets import redact

    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, pydantic.ValidationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return redact(str(e)).strip().splitlines()[0]
    problems: list[str] = []
    for err in cause.errors(include_input=False, include_url=False):
        parts = [re.sub(r" at <string>:\d+$", "", str(p)) for p in err["loc"]]
        field = ".".join(re.sub(r"\.?function-\w+\[[^\]]*\]", "", p) for p in parts if p)
        # Dagster lets every field also be a template string: that alternative's "not a string" is noise.
        if field.endswith(".str") or field == "str":
            continue
        problems.append(f"{field or '(top level)'}: {str(err['msg']).removeprefix('Value error, ')}")
    return redact("; ".join(dict.fromkeys(problems)) or "invalid")


def read_defs(path: Path) -> list[DefsEntry]:
    """Every ADU component in the file (a file may hold several, separated by `---`), resolved and validated."""
    import yaml

    import adu_assets

    path = Path(path)
    if path.is_dir():
        path = path / "defs.yaml"
    if not path.is_file():
        raise DefsFileError(f"{path}: no such file (give the path of a defs.yaml)")
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as e:
        raise DefsFileError(f"{path}: not valid YAML: {e}") from None
    entries: list[DefsEntry] = []
    for number, doc in enumerate(documents, start=1):
        where = f"{path}" if len(documents) == 1 else f"{path} (document {number})"
        type_name = doc.get("type") if isinstance(doc, dict) else None
        if type_name not in COMPONENT_TYPES:
            raise DefsFileError(
                f"{where}: `type:` is {type_name!r}; expected one of {', '.join(COMPONENT_TYPES)}"
            )
        cls = getattr(adu_assets, type_name.split(".")[-1])
        attributes = doc.get("attributes") or {}
        try:
            component = cls.resolve_from_yaml(yaml.safe_dump(attributes, sort_keys=False))
        except Exception as e:
            raise DefsFileError(f"{where}: {type_name} attributes are invalid: {_explain(e)}") from None
        entries.append(DefsEntry(type_name, str(getattr(component, "name", "?")), component))
    if not entries:
        raise DefsFileError(f"{path}: the file holds no component")
    return entries
