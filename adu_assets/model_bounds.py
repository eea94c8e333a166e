"""Field checks shared by the YAML models: numeric bounds, component names, ISO dates.

Dagster's component resolver accepts only plain field types in YAML models, and pydantic's
`Field(ge=...)` turns a field into an `Annotated` type that it rejects. So bounds are checked in a
model validator instead, with the same kind of message naming the field.
"""

from typing import Any


def require_at_least(model: Any, where: str, **minimums: float) -> None:
    for field, minimum in minimums.items():
        value = getattr(model, field)
        if value is not None and value < minimum:
            raise ValueError(f"{where}.{field} must be at least {minimum:g} (got {value})")


def require_at_most(model: Any, where: str, **maximums: float) -> None:
    for field, maximum in maximums.items():
        value = getattr(model, field)
        if value is not None and value > maximum:
            raise ValueError(f"{where}.{field} must be at most {maximum:g} (got {value})")


def asset_key_name(value: str) -> str:
    """A component `name`: it becomes an asset key prefix, a group and job names."""
    if not value or not all(c.isascii() and (c.isalnum() or c == "_") for c in value):
        raise ValueError(
            f"name {value!r} must be ASCII letters, digits and underscores (it becomes an asset key)"
        )
    return value


def key_part(source_name: str) -> str:
    """A readable asset key part for a source name: `Order Details` -> `Order_Details`, `a/b` -> `a_b`,
    `Café` -> `Cafe`. Dagster key parts (and so op names, warehouse tables and Parquet folders) take letters,
    digits and underscores only; the result never contains `/` or `..`, so it cannot leave the data folder.
    A name with nothing readable left (`日本`) gets `t_` and a short hash of the name."""
    import hashlib
    import re
    import unicodedata

    if source_name and all(c.isascii() and (c.isalnum() or c == "_") for c in source_name):
        return source_name
    ascii_only = unicodedata.normalize("NFKD", source_name).encode("ascii", "ignore").decode()
    part = re.sub(r"[^A-Za-z0-9_]+", "_", ascii_only).strip("_")
    if not part:
        part = "t_" + hashlib.sha1(source_name.encode()).hexdigest()[:8]
    return part


def iso_date(value: str | None, field: str = "start_date") -> str | None:
    if value is not None:
        from datetime import datetime

        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"{field} {value!r} must be a date like 2024-01-31") from None
    return value
