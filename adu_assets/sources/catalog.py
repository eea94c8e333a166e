"""What discovery finds: tables and their columns, and identifier quoting per dialect."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # the source's own type name, e.g. "numeric(15,2)", "timestamp with time zone"
    nullable: bool = True


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: tuple[ColumnInfo, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TableInfo:
        return cls(
            schema=d["schema"], name=d["name"], columns=tuple(ColumnInfo(**c) for c in d.get("columns", ()))
        )


def quote_ident(name: str) -> str:
    """Quote an identifier for PostgreSQL, DuckDB, SQLite, Vertica and Oracle (all use double quotes).

    Embedded double quotes are doubled, so a name like `users"; drop table x; --` stays one identifier.
    """
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"
