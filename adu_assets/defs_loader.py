"""Load component YAML from the package's demo folder or from any folder named by ADU_DEFS_DIR.

A user's folder is not a Python package, so it is given a module identity here, and a small project
marker (dg.toml) under the state directory tells Dagster where its defs live. Cached discovery state is
kept beside the YAML (`<folder>/.local_defs_state/`), so a container only needs that folder mounted.

Each YAML file is loaded on its own, with Dagster's component machinery but not its whole-tree build:
one broken file (a key typo, an unknown type, a duplicate asset key) becomes a `LoadProblem` that names
the file, line, field and fix, while every other component still loads and runs. The problems are logged
and shown in the UI as a sensor per broken file whose skip reason is the problem (see `problem_sensor`);
`adu validate` prints the same lines. YAML is parsed with the C (libyaml) parser while keeping source
positions: Dagster's pure-Python position-tracking parse was a quarter of the load time at 200 tables.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import logging
import os
import re
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster.components.core.component_tree import ComponentTree
from dagster_shared.yaml_utils import YAML_TIMESTAMP_TAG, _CanRemoveImplicitResolver
from dagster_shared.yaml_utils.source_position import (
    LineCol,
    SourcePosition,
    SourcePositionTree,
    ValueAndSourcePositionTree,
)

DEFS_DIR_ENV = "ADU_DEFS_DIR"
DEMO_MODULE = "adu_assets.defs"
COMPONENT_FILE_NAMES = ("defs.yaml", "defs.yml", "component.yaml")
TOP_LEVEL_KEYS = ("type", "attributes", "template_vars_module", "requirements", "post_processing")

log = logging.getLogger("adu_assets.defs_loader")

# While a component builds its definitions: the metadata Dagster would add to each of its assets (a code
# reference to the YAML line, the component). Dagster adds it afterwards by rebuilding every asset, which
# was a quarter of the load time; a component whose class sets `adds_yaml_metadata = True` puts
# `yaml_metadata()` into its assets' metadata itself and is not rebuilt.
_YAML_METADATA: ContextVar[Callable[[], dict[str, Any]] | None] = ContextVar(
    "adu_yaml_metadata", default=None
)


class _OnceMetadata:
    """The component's YAML metadata, built on first use and shared by all of its assets."""

    def __init__(self, update: Callable[[dict[str, Any]], Any]) -> None:
        self._update = update
        self._value: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._value is None:
            self._value = dict(self._update({}))
        return self._value


def yaml_metadata() -> dict[str, Any]:
    make = _YAML_METADATA.get()
    return dict(make()) if make is not None else {}


def defs_module_for(folder: Path | None) -> types.ModuleType:
    if folder is None:
        return importlib.import_module(DEMO_MODULE)
    folder = folder.resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{DEFS_DIR_ENV}={folder} is not a folder")
    name = "adu_user_defs_" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        module.__file__ = None
        sys.modules[name] = module
    return module


def project_root_for(module: types.ModuleType) -> Path:
    """A directory whose dg.toml names `module` as the defs module (Dagster resolves state paths by it)."""
    base = Path(os.environ.get("ADU_STATE_DIR") or Path(tempfile.gettempdir()) / "adu_projects")
    root = base / module.__name__.replace(".", "_")
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "dg.toml"
    top = module.__name__.split(".")[0]
    text = f'[project]\nroot_module = "{top}"\ndefs_module = "{module.__name__}"\n'
    if not marker.exists() or marker.read_text() != text:
        marker.write_text(text)
    return root


def defs_folder(folder: Path | None = None) -> Path | None:
    if folder is None and os.environ.get(DEFS_DIR_ENV):
        folder = Path(os.environ[DEFS_DIR_ENV])
    return folder


def component_tree(folder: Path | None = None) -> ComponentTree:
    module = defs_module_for(defs_folder(folder))
    return ComponentTree.from_module(defs_module=module, project_root=project_root_for(module))


# --- YAML with source positions, parsed by libyaml ----------------------------------------------------


class _PositionLoader(yaml.CSafeLoader, _CanRemoveImplicitResolver):
    """Dagster's `parse_yamls_with_source_position` on the C parser: same trees, about 3x faster."""

    filename = "<string>"

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        position = SourcePosition(
            filename=self.filename,
            start=LineCol(line=node.start_mark.line + 1, col=node.start_mark.column + 1),
            end=LineCol(line=node.end_mark.line + 1, col=node.end_mark.column + 1),
        )
        value = super().construct_object(node, True)
        if isinstance(value, dict):
            raw: dict[Any, Any] = {}
            children: dict[Any, SourcePositionTree] = {}
            for k, v in value.items():
                raw[k.value] = v.value
                children[k.value] = SourcePositionTree(
                    position=k.source_position_tree.position, children=v.source_position_tree.children
                )
            return ValueAndSourcePositionTree(raw, SourcePositionTree(position=position, children=children))
        if isinstance(value, list):
            items = [v.value for v in value]
            positions: dict[str | int, SourcePositionTree] = {
                i: v.source_position_tree for i, v in enumerate(value)
            }
            return ValueAndSourcePositionTree(
                items, SourcePositionTree(position=position, children=positions)
            )
        return ValueAndSourcePositionTree(value, SourcePositionTree(position=position, children={}))


_PositionLoader.remove_implicit_resolver(YAML_TIMESTAMP_TAG)  # type: ignore[no-untyped-call]


class _PlainLoader(yaml.CSafeLoader, _CanRemoveImplicitResolver):
    pass


_PlainLoader.remove_implicit_resolver(YAML_TIMESTAMP_TAG)  # type: ignore[no-untyped-call]


def parse_yaml_fast(text: str, filename: str) -> list[ValueAndSourcePositionTree]:
    """The documents with only each document's own position: the happy path needs no more (a file that
    fails to load is parsed again by `parse_yaml_with_positions` to report lines), and building the
    position tree was most of the parse time."""
    loader = _PlainLoader(text)
    try:
        documents = []
        while loader.check_node():  # type: ignore[no-untyped-call]
            node: Any = loader.get_node()  # type: ignore[no-untyped-call]
            position = SourcePosition(
                filename=filename,
                start=LineCol(line=node.start_mark.line + 1, col=node.start_mark.column + 1),
                end=LineCol(line=node.end_mark.line + 1, col=node.end_mark.column + 1),
            )
            value = loader.construct_document(node)  # type: ignore[no-untyped-call]
            documents.append(
                ValueAndSourcePositionTree(value, SourcePositionTree(position=position, children={}))
            )
        return documents
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def parse_yaml_with_positions(text: str, filename: str) -> list[ValueAndSourcePositionTree]:
    loader = _PositionLoader(text)
    loader.filename = filename
    try:
        documents = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            documents.append(loader.get_data())
        return documents
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


# --- problems -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProblem:
    """One thing wrong with one YAML file, as `file:line: field: message`."""

    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


def _first_line(text: str) -> str:
    from adu_assets.secrets import redact

    lines = [ln.strip() for ln in redact(text).splitlines() if ln.strip()]
    return lines[0][:400] if lines else ""


def _position_at(tree: SourcePositionTree | None, path: Sequence[Any]) -> int:
    """The line of the deepest YAML node along `path` (a key's own line for mapping entries)."""
    line = tree.position.start.line if tree else 1
    for part in path:
        if tree is None:
            break
        child = tree.children.get(part)
        if child is None:
            break
        tree = child
        line = tree.position.start.line
    return line


def _unwrap_models(annotation: Any) -> list[type[Any]]:
    """The pydantic model classes an annotation can hold (through Optional, list, dict, Annotated)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[Any]] = []
    for arg in typing.get_args(annotation):
        found.extend(_unwrap_models(arg))
    return found


def _valid_keys_at(model: type[Any] | None, path: Sequence[Any]) -> list[str]:
    """The field names (with aliases) of the model that the YAML mapping at `path` is validated against."""
    current: list[type[Any]] = [model] if model is not None else []
    for part in path:
        if not isinstance(part, str):
            continue  # a list index or dict key: same model type underneath
        nxt: list[type[Any]] = []
        for m in current:
            f = getattr(m, "model_fields", {}).get(part)
            if f is not None:
                nxt.extend(_unwrap_models(f.annotation))
        if nxt:
            current = nxt
    keys: list[str] = []
    for m in current[:1]:
        for name, f in getattr(m, "model_fields", {}).items():
            keys.append(f.alias or name)
    return keys


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
    return "valid keys: " + ", ".join(sorted(valid)) if valid else "remove it"


def _clean_loc(loc: Sequence[Any], data: Any) -> list[Any]:
    """Pydantic locations include union/validator tags ('function-after[...]', 'list[...]'): keep the parts
    that are real keys or indexes of the YAML data."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, Mapping) and isinstance(part, str) and not re.search(r"[\[\]-]", part):
            out.append(part)  # a missing or unknown key: still a field name
            node = None
    return out


def problems_from_validation(
    file: Path,
    error: Any,
    *,
    data: Any,
    tree: SourcePositionTree | None,
    prefix: Sequence[Any],
    model: type[Any] | None,
) -> list[LoadProblem]:
    """A pydantic ValidationError as one LoadProblem per error, with the line of the offending key."""
    problems: list[LoadProblem] = []
    seen: set[tuple[int, str]] = set()
    errors = list(error.errors())
    # Dagster's YAML models accept a template string wherever a mapping goes: for a mapping, the
    # "Input should be a valid string" alternative is noise next to the real error.
    real = [
        e
        for e in errors
        if not (str(e.get("type", "")).endswith("_type") and isinstance(e.get("input"), dict | list))
    ]
    for err in real or errors:
        loc = _clean_loc(err.get("loc", ()), data)
        path = [*prefix, *loc]
        line = _position_at(tree, path)
        field_name = ".".join(str(p) for p in path) or "(document)"
        kind = err.get("type", "")
        if kind == "extra_forbidden" and loc:
            message = f"unknown key `{loc[-1]}`: {_suggest(str(loc[-1]), _valid_keys_at(model, loc[:-1]))}"
        elif kind == "missing":
            message = "required, but missing: add it"
        else:
            message = str(err.get("msg", "invalid value"))
            if "input" in err and not isinstance(err["input"], dict | list):
                message += f" (got {err['input']!r})"
        if (line, field_name) in seen:
            continue
        seen.add((line, field_name))
        problems.append(LoadProblem(file, line, field_name, message))
    return problems


def find_component_files(folder: Path) -> list[Path]:
    """Every component YAML file under `folder`: the first of defs.yaml / defs.yml / component.yaml in a
    directory (as Dagster picks), with hidden directories and __pycache__ skipped."""
    found: list[Path] = []

    def walk(d: Path) -> None:
        for name in COMPONENT_FILE_NAMES:
            if (d / name).is_file():
                found.append(d / name)
                return
        for sub in sorted(d.iterdir()):
            if sub.is_dir() and not sub.name.startswith(".") and sub.name != "__pycache__":
                walk(sub)

    walk(folder)
    return found


def stray_component_files(folder: Path, loaded: Sequence[Path]) -> list[LoadProblem]:
    """YAML files that look like a component (a top-level `type:`), and Python files, that are never loaded."""
    loaded_set = {p.resolve() for p in loaded}
    problems = []
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        rel_parts = path.relative_to(folder).parts
        if path.resolve() in loaded_set or any(p.startswith(".") for p in rel_parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if re.search(r"^type:\s*\S", text, re.MULTILINE):
            problems.append(
                LoadProblem(
                    path,
                    1,
                    "(file)",
                    f"never loaded: only {' / '.join(COMPONENT_FILE_NAMES)} are, one per folder; "
                    "move it to its own folder as defs.yaml",
                )
            )
    for path in sorted(folder.rglob("*.py")):
        rel_parts = path.relative_to(folder).parts
        if path.name == "__init__.py" or any(p.startswith(".") or p == "__pycache__" for p in rel_parts):
            continue
        problems.append(
            LoadProblem(
                path, 1, "(file)", "never loaded: ADU loads YAML components only; describe it in a defs.yaml"
            )
        )
    return problems


# --- loading ------------------------------------------------------------------------------------------


@dataclass
class LoadedLocation:
    defs: dg.Definitions
    # each source connection's (pool, max_parallel)
    pools: list[tuple[str, int]] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)
    components: list[dg.Component] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


class _Loader:
    def __init__(self, folder: Path | None) -> None:
        from dagster.components.core.defs_module import DefsFolderComponent, context_with_injected_scope

        self.module = defs_module_for(folder)
        self.folder = Path(self.module.__path__[0]).resolve()
        self.tree = ComponentTree.from_module(
            defs_module=self.module, project_root=project_root_for(self.module)
        )
        self.context = context_with_injected_scope(self.tree.decl_load_context, DefsFolderComponent, None)

    def decls(
        self, path: Path, *, positions: bool = False
    ) -> Iterator[tuple[Any, ValueAndSourcePositionTree]]:
        from dagster.components.core.decl import YamlDecl, build_component_decl_from_yaml_document
        from dagster.components.core.defs_module import ComponentPath

        parse = parse_yaml_with_positions if positions else parse_yaml_fast
        trees = parse(path.read_text(encoding="utf-8"), str(path))
        if not trees:
            raise ValueError("the file is empty: give it `type:` and `attributes:`")
        for i, tree in enumerate(trees):
            loc = ComponentPath.from_path(path.parent, i)
            decl = build_component_decl_from_yaml_document(
                context=self.context.for_component_loc(loc), source_tree=tree, path=loc
            )
            if not isinstance(decl, YamlDecl):
                raise ValueError(f"{decl.component_type.__name__} folders are not supported in ADU YAML")
            yield decl, tree

    def load_file(self, path: Path) -> tuple[dg.Definitions, list[dg.Component]]:
        from dagster.components.core.context import ComponentLoadContext
        from dagster.components.core.defs_module import _add_defs_yaml_metadata
        from dagster.components.resolved.core_models import post_process_defs

        defs_list: list[dg.Definitions] = []
        components: list[dg.Component] = []
        for decl, tree in self.decls(path):
            component = decl._load_component()  # noqa: SLF001  # Dagster's YAML load of one document
            load_context = ComponentLoadContext.from_decl_load_context(decl.context, decl)
            position = tree.source_position_tree.position

            def with_code_references(
                metadata: Any, c: Any = component, ctx: Any = load_context, at: Any = position
            ) -> Any:
                return _add_defs_yaml_metadata(
                    component_yaml_path=path,
                    load_context=ctx,
                    component=c,
                    source_position=at,
                    metadata=metadata,
                )

            if getattr(component, "adds_yaml_metadata", False):
                token = _YAML_METADATA.set(_OnceMetadata(with_code_references))
                try:
                    built = component.build_defs(load_context)
                finally:
                    _YAML_METADATA.reset(token)
            else:
                built = component.build_defs(load_context).with_definition_metadata_update(
                    with_code_references
                )
            defs_list.append(post_process_defs(built, list(decl.get_asset_post_processor_lists())))
            components.append(component)
        return dg.Definitions.merge(*defs_list), components

    def check_file(self, path: Path) -> list[LoadProblem]:
        """Why `path` does not load, without building anything or connecting anywhere."""
        from dagster.components.core.decl import _get_component_class
        from dagster.components.core.defs_module import ComponentFileModel
        from pydantic import TypeAdapter, ValidationError

        try:
            trees = parse_yaml_with_positions(path.read_text(encoding="utf-8"), str(path))
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 1
            where = ""
            if e.context and e.context_mark is not None and e.context_mark.line + 1 != line:
                where = f" ({e.context} started on line {e.context_mark.line + 1})"
            return [LoadProblem(path, line, "(yaml)", f"{e.problem or e}{where}: fix the YAML syntax")]
        except (OSError, UnicodeDecodeError) as e:
            return [LoadProblem(path, 1, "(file)", f"cannot read: {e}")]
        if not trees:
            return [LoadProblem(path, 1, "(file)", "empty: give it `type:` and `attributes:`")]
        problems: list[LoadProblem] = []
        for tree in trees:
            data, positions = tree.value, tree.source_position_tree
            if not isinstance(data, dict):
                problems.append(
                    LoadProblem(
                        path,
                        positions.position.start.line,
                        "(document)",
                        "expected a mapping with `type:` and `attributes:`",
                    )
                )
                continue
            try:
                file_model = ComponentFileModel.model_validate(data)
            except ValidationError as e:
                problems += problems_from_validation(
                    path, e, data=data, tree=positions, prefix=[], model=ComponentFileModel
                )
                continue
            try:
                component_type = _get_component_class(self.context, file_model)
            except Exception as e:
                known = ["adu_assets.DatabaseExport", "adu_assets.ApiIngest", "adu_assets.FileDrop"]
                close = difflib.get_close_matches(file_model.type, known, n=1, cutoff=0.6)
                fix = f"did you mean `{close[0]}`?" if close else "use one of " + ", ".join(known)
                problems.append(
                    LoadProblem(
                        path,
                        _position_at(positions, ["type"]),
                        "type",
                        f"unknown component type `{file_model.type}` ({_first_line(str(e))}): {fix}",
                    )
                )
                continue
            attributes = file_model.attributes or {}
            model_cls = component_type.get_model_cls()
            if model_cls is None:
                continue
            try:
                TypeAdapter(model_cls).validate_python(attributes)
            except ValidationError as e:
                problems += problems_from_validation(
                    path, e, data=attributes, tree=positions, prefix=["attributes"], model=model_cls
                )
        if problems:
            return problems
        # The raw model is fine: resolve templates and run the component's own validators.
        try:
            for decl, tree in self.decls(path, positions=True):
                try:
                    decl._load_component()  # noqa: SLF001
                except ValidationError as e:
                    problems += problems_from_validation(
                        path,
                        e,
                        data=(tree.value or {}).get("attributes") or {},
                        tree=tree.source_position_tree,
                        prefix=["attributes"],
                        model=decl.component_type.get_model_cls(),
                    )
        except Exception as e:
            problems.append(problem_from_exception(path, e))
        return problems


def problem_from_exception(path: Path, error: BaseException) -> LoadProblem:
    """Last resort for an error the checks above did not predict: its first meaningful line."""
    from pydantic import ValidationError

    cause: BaseException = error
    while cause.__cause__ is not None and not isinstance(cause, ValidationError):
        cause = cause.__cause__
    text = _first_line(str(cause)) or type(cause).__name__
    line = 1
    match = re.search(rf"{re.escape(str(path))}:(\d+)", str(error))
    if match:
        line = int(match.group(1))
    return LoadProblem(path, line, "attributes", text)


def load_components(folder: Path | None = None) -> tuple[list[dg.Component], list[LoadProblem]]:
    """The components of every YAML file that loads (nothing is built), and the problems of the others."""
    loader = _Loader(defs_folder(folder))
    components: list[dg.Component] = []
    problems: list[LoadProblem] = []
    for path in find_component_files(loader.folder):
        try:
            components += [decl._load_component() for decl, _ in loader.decls(path)]  # noqa: SLF001
        except Exception as e:
            problems += loader.check_file(path) or [problem_from_exception(path, e)]
    return components, problems


def validate_folder(folder: Path | None = None) -> tuple[list[Path], list[LoadProblem]]:
    """Every component YAML file under the defs folder and what is wrong with each (nothing is built)."""
    loader = _Loader(defs_folder(folder))
    files = find_component_files(loader.folder)
    problems = [p for f in files for p in loader.check_file(f)]
    problems += stray_component_files(loader.folder, files)
    return files, problems


def _line_of(path: Path, key_path: Sequence[Any]) -> int:
    try:
        trees = parse_yaml_with_positions(path.read_text(encoding="utf-8"), str(path))
    except Exception:
        return 1
    return _position_at(trees[0].source_position_tree, key_path) if trees else 1


def _defined_names(defs: dg.Definitions) -> set[str]:
    names: set[str] = set()
    for a in defs.assets or []:
        keys = a.keys if isinstance(a, dg.AssetsDefinition) else [getattr(a, "key", None)]
        names.update(f"asset {k.to_user_string()}" for k in keys if k is not None)
    for kind, items in (("job", defs.jobs), ("schedule", defs.schedules), ("sensor", defs.sensors)):
        names.update(f"{kind} {getattr(i, 'name', '')}" for i in items or [])
    return names


def load_location(folder: Path | None = None) -> LoadedLocation:
    """Every component that loads, and a LoadProblem for each file that does not."""
    loader = _Loader(defs_folder(folder))
    files = find_component_files(loader.folder)
    result = LoadedLocation(defs=dg.Definitions(), files=files)
    loaded: list[dg.Definitions] = []
    owner: dict[str, Path] = {}
    for path in files:
        try:
            defs, components = loader.load_file(path)
        except Exception as e:
            problems = loader.check_file(path) or [problem_from_exception(path, e)]
            for p in problems:
                log.error("%s (this component is not loaded; the others are)", p)
            result.problems += problems
            continue
        names = _defined_names(defs)
        clashes = sorted(n for n in names if n in owner)
        if clashes:
            problem = LoadProblem(
                path,
                _line_of(path, ["attributes", "name"]),
                "attributes.name",
                f"{clashes[0]} is already defined by {owner[clashes[0]]}: give this component another name",
            )
            log.error("%s (this component is not loaded; the others are)", problem)
            result.problems.append(problem)
            continue
        owner.update(dict.fromkeys(names, path))
        loaded.append(defs)
        result.components += components
        for component in components:
            connection = getattr(component, "connection", None)
            if connection is not None and hasattr(connection, "pool_name"):
                result.pools.append((connection.pool_name(), connection.max_parallel))
    result.defs = dg.Definitions.merge(*loaded) if loaded else dg.Definitions()
    return result


def _skip_with(message: str) -> Any:
    def evaluate(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        context.log.error(message)
        return dg.SkipReason(message)

    return evaluate


def problem_sensors(problems: Sequence[LoadProblem]) -> list[dg.SensorDefinition]:
    """One always-running sensor per broken file: its skip reason (UI, daemon log) is the problem."""
    by_file: dict[Path, list[LoadProblem]] = {}
    for p in problems:
        by_file.setdefault(p.file, []).append(p)
    sensors = []
    used: set[str] = set()
    for file, items in by_file.items():
        rel = file.parent.name or file.stem
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", rel).strip("_") or "file"
        name = f"adu_broken_yaml__{slug}"
        n = 2
        while name in used:
            name, n = f"adu_broken_yaml__{slug}_{n}", n + 1
        used.add(name)
        text = "\n".join(str(p) for p in items)
        message = (
            f"{file} did not load, so its assets are missing (the other components run): {text} "
            "-- fix it, check with `adu validate`, then reload the code location."
        )

        sensors.append(
            dg.SensorDefinition(
                name=name,
                evaluation_fn=_skip_with(message),
                minimum_interval_seconds=600,
                default_status=dg.DefaultSensorStatus.RUNNING,
                description=f"Load error in {file}:\n" + text,
            )
        )
    return sensors
