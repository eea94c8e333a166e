"""Numeric bounds for YAML models.

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
