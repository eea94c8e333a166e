"""Every YAML field's description reaches Dagster's own tooling (`dg utils inspect-component`, the editor schema).

Dagster builds the YAML model of a component from its pydantic fields, and for a field with a default it
adds its own `Field(description=None)` that replaces the one written in the component
(`dagster/components/resolved/base.py: derive_model_type`). Dagster's models avoid that with
`Annotated[T, Resolver.default(description=...)]` on every field. Rather than restating each
description in that form, `document_fields` adds the same default Resolver, carrying the field's own
pydantic description, to every documented field of the component types and the models nested in them.
It runs once, when `adu_assets` is imported, which is before Dagster derives any model.

A field that has no description of its own takes one from FALLBACK_DOCS, so that no field's doc is blank.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from pydantic import BaseModel

# Fields whose model does not describe them (keyed "<Model>.<field>"), and nested models with no docstring
# (keyed "<Model>"). A description written on the field or the class itself always wins.
FALLBACK_DOCS: dict[str, str] = {
    "ConnectionConfig": "A database: kind, host, port and database (or a file path), user, and where the password comes from",
    "AuthConfig": "How requests authenticate; secrets only from *_env or *_encrypted",
    "PaginationConfig": "How the next page is requested",
    "RetryConfig": "Backoff and timeouts for 429, 5xx and network errors",
    "DatabaseExport.connection": "Where the source tables live; the password comes from password_env or password_encrypted",
    "DatabaseExport.schema": "Source schema (main for DuckDB/SQLite files)",
    "DatabaseExport.tables": "Tables to export; omit to export every base table of the schema",
    "DatabaseExport.destinations": "Where each partition lands: parquet files and/or the DuckDB warehouse",
    "DatabaseExport.timezone": "Timezone of `schedule` (an IANA name such as Europe/Paris)",
    "DatabaseExport.owners": "Owners of every asset (emails or team:name), shown in the UI",
    "DatabaseExport.description": "Description of the source, shown on every asset",
    "DatabaseExport.tags": "Tags put on every asset (key: value)",
    "DatabaseExport.defs_state": "Where the discovered table list is cached (default: beside this YAML)",
    "DefsStateConfigArgs.management_type": (
        "LOCAL_FILESYSTEM (cached beside this YAML) | VERSIONED_STATE_STORAGE | LEGACY_CODE_SERVER_SNAPSHOTS"
    ),
    "TableConfig.description": "Description of this table's asset, shown in the UI",
    "TableConfig.owners": "Owners of this table's asset (emails or team:name)",
    "ConnectionConfig.host": "Server host name or address",
    "ConnectionConfig.port": "Server port (default: the driver's)",
    "ConnectionConfig.user": "Login user",
    "ApiIngest.timezone": "Timezone of `schedule` (an IANA name such as Europe/Paris)",
    "ApiIngest.owners": "Owners of the asset (emails or team:name), shown in the UI",
    "ApiIngest.description": "Description of the asset, shown in the UI",
    "ApiIngest.tags": "Tags put on the asset (key: value)",
    "FileDrop.timezone": "Timezone of `schedule` (an IANA name such as Europe/Paris)",
    "FileDrop.owners": "Owners of the asset (emails or team:name), shown in the UI",
    "FileDrop.description": "Description of the asset, shown in the UI",
    "FileDrop.tags": "Tags put on the asset (key: value)",
    "FileDrop.destinations": "Where each file's rows land: parquet files and/or the DuckDB warehouse",
    "ApiIngest.request": "The HTTP request: URL, parameters, auth, pagination and retries",
    "ApiIngest.destination": "The table the mapped rows are inserted or upserted into",
    "RequestConfig.url": "Endpoint URL; {partition_start}, {partition_end} and {partition_key} are filled in",
    "RequestConfig.method": "GET or POST",
    "RequestConfig.headers": "Extra request headers (no secrets: use auth)",
    "RequestConfig.params": "Query parameters; {partition_start}, {partition_end} and {partition_key} are filled in",
    "RequestConfig.auth": "none | bearer | api_key | basic | oauth2_client_credentials, with its secret's source",
    "RequestConfig.pagination": "none | page | offset | cursor | next_url | link_header",
    "RequestConfig.retry": "Backoff and timeouts for 429, 5xx and network errors",
    "RetryConfig.backoff_base_seconds": "First retry delay; it doubles with jitter on each retry",
    "RetryConfig.backoff_max_seconds": "Longest delay between two retries",
    "RetryConfig.timeout_seconds": "Timeout of one HTTP request",
    "PaginationConfig.type": "none | page | offset | cursor | next_url | link_header",
    "PaginationConfig.page_param": "page: query parameter carrying the page number",
    "PaginationConfig.page_size": "page: records per page",
    "PaginationConfig.start_page": "page: number of the first page (0 or 1)",
    "PaginationConfig.offset_param": "offset: query parameter carrying the offset",
    "PaginationConfig.limit_param": "offset: query parameter carrying the page length",
    "PaginationConfig.limit": "offset: records per page",
    "PaginationConfig.cursor_param": "cursor: query parameter carrying the cursor",
    "AuthConfig.type": "none | bearer | api_key | basic | oauth2_client_credentials",
    "AuthConfig.api_key_in": "api_key: send it as a header or a query parameter",
    "AuthConfig.password_env": "basic: environment variable holding the password",
    "AuthConfig.password_encrypted": "basic: Fernet token of the password (see `adu secrets encrypt`)",
    "AuthConfig.client_id": "oauth2: client id (not a secret)",
    "AuthConfig.client_secret_env": "oauth2: environment variable holding the client secret",
    "AuthConfig.client_secret_encrypted": "oauth2: Fernet token of the client secret",
    "AuthConfig.scope": "oauth2: scope to request, space-separated",
    "DestinationConfig.connection": "The destination database (oracle, postgres or duckdb)",
    "DestinationConfig.mode": "insert: append every row; upsert: insert new keys, update changed rows",
    "DestinationConfig.skip_when": "Leave target rows untouched whose column equals a value, e.g. rows marked processed",
    "ChecksConfig.columns": "Rules per column: not_null, ge, le, gt, lt, isin, regex, dtype, nullable",
    "ChecksConfig.row_count": "{min: N, max: N} rows per partition",
    "ChecksConfig.drift": "evidently drift check of this partition against the previous one",
    "ChecksConfig.blocking": "true: a failed check stops downstream assets (and an API task's write)",
    "ChecksConfig.freshness": "{max_lag_hours: N}: the UI shows the table as stale past this lag",
    "FreshnessConfig.max_lag_hours": "Hours after which the latest partition counts as stale",
    "DriftConfig.sample_rows": "Rows sampled from each partition for the comparison",
    "DriftConfig.seed": "Seed of the sample, so a re-run compares the same rows",
    "RowCountRule.min": "Fewest rows a partition may have",
    "RowCountRule.max": "Most rows a partition may have",
    "ColumnRules.not_null": "No null values",
    "ColumnRules.ge": "Every value >= this",
    "ColumnRules.le": "Every value <= this",
    "ColumnRules.gt": "Every value > this",
    "ColumnRules.lt": "Every value < this",
    "ColumnRules.isin": "Every value is one of these",
    "ColumnRules.regex": "Every value matches this regular expression",
    "ColumnRules.nullable": "false: nulls fail the check (as not_null: true)",
}


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models mentioned anywhere in a field's type (list[X] | None, dict[str, X], unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(annotation)
        # A Resolver(model_field_type=...) means the YAML holds that model, not the resolved type.
        for extra in extras:
            found += _nested_models(getattr(extra, "model_field_type", None))
        return found + _nested_models(inner)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found += _nested_models(arg)
    return found


def _enums(annotation: Any) -> list[type[enum.Enum]]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [annotation]
    return [e for arg in typing.get_args(annotation) for e in _enums(arg)]


def document_fields(*models: type[BaseModel]) -> None:
    """Give every field of these models (and of the models nested in them) a description Dagster keeps."""
    from dagster.components import Resolvable, Resolver

    seen: set[type[BaseModel]] = set()

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            mentioned = _nested_models(info.annotation)
            for extra in info.metadata:
                # A Resolver(model_field_type=...) means the YAML holds that model, not the resolved type.
                mentioned += _nested_models(getattr(extra, "model_field_type", None))
            for choice in _enums(info.annotation):
                # Likewise for a choice: dg shows the enum's docstring.
                if not choice.__doc__ or choice.__doc__ == "An enumeration.":
                    choice.__doc__ = info.description
            for nested in mentioned:
                # dg's YAML template describes a nested block by its model's docstring, not the field's.
                if not nested.__doc__:
                    nested.__doc__ = FALLBACK_DOCS.get(nested.__name__) or info.description
                visit(nested)
            if not info.description and f"{model.__name__}.{name}" in FALLBACK_DOCS:
                info.description = FALLBACK_DOCS[f"{model.__name__}.{name}"]
            if (
                issubclass(model, Resolvable)
                and info.description
                and not any(isinstance(m, Resolver) for m in info.metadata)
            ):
                # What Dagster's own models write as Annotated[T, Resolver.default(description=...)].
                info.metadata.append(Resolver.default(description=info.description))
        # Plain nested models show pydantic's own schema, which embeds each nested model's schema as it was
        # built: rebuild after the models inside, so a fallback description appears at every depth.
        model.model_rebuild(force=True)

    for model in models:
        visit(model)
