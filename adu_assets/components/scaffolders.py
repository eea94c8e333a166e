"""`dg scaffold defs adu_assets.<Type> <folder>` writes a valid, commented example for each component.

Dagster's default scaffolder writes `attributes: {}`, which fails `dg check defs` because every component
has required fields. These write a small, complete example instead: it loads as is (no server is
contacted while definitions load), and the comments say what to change. The asset name is taken from the
folder's name.
"""

from __future__ import annotations

import re
from typing import Any

from dagster.components.scaffold.scaffold import Scaffolder, ScaffoldRequest, scaffold_with


def asset_name_for(folder_name: str) -> str:
    """A folder name as an asset key part: letters, digits and underscores, not starting with a digit."""
    name = re.sub(r"\W+", "_", folder_name).strip("_").lower() or "example"
    return f"t_{name}" if name[0].isdigit() else name


DATABASE_EXPORT = """\
# Every table below becomes a daily-partitioned asset keyed [{name}, <schema>, <table>] in group {name}.
# Field reference: `dg utils inspect-component adu_assets.DatabaseExport`, and the README.
type: adu_assets.DatabaseExport
attributes:
  name: {name}                         # asset key prefix and group name
  connection:
    kind: postgres                     # postgres | vertica | duckdb | sqlite | oracle
    host: db.example.internal
    port: 5432
    database: sales
    user: adu_reader
    # Never a plain password: an environment variable, or `password_encrypted: <token>`
    # from `adu secrets encrypt`. Check it with `adu test-connection <this file>`.
    password_env: SALES_DB_PASSWORD
  schema: public                       # main for DuckDB and SQLite files
  start_date: "2026-01-01"             # first daily partition
  destinations: [parquet, duckdb]      # Parquet files and/or the DuckDB warehouse
  # Omit `tables:` to export every base table of the schema (discovered once; `adu refresh-state`).
  tables:
    - name: orders
      incremental_column: updated_at   # daily partitions over this column
      checks:
        columns:
          total: {{not_null: true, ge: 0}}
        unique: [order_id]
        row_count: {{min: 1}}
    - name: customers                  # no incremental column: one daily snapshot per partition
  # schedule: "0 2 * * *"              # daily at 02:00 UTC: exports the day that just ended
  # `dagster dev` and `dg check defs` re-discover the tables on every load unless told not to. With
  # `tables:` listed nothing needs discovering, so the database need not be reachable to load this file.
  defs_state: {{management_type: LOCAL_FILESYSTEM, refresh_if_dev: false}}
"""

API_INGEST = """\
# One asset [{name}]: each daily partition fetches every page, maps the fields and upserts the rows.
# `adu preview <this file>` fetches one page and suggests `mappings:`; `adu test-connection <this file>`
# checks the API and the destination. Field reference: `dg utils inspect-component adu_assets.ApiIngest`.
type: adu_assets.ApiIngest
attributes:
  name: {name}
  request:
    url: https://api.example.internal/v1/items
    params: {{updated_since: "{{partition_start}}"}}   # also {{partition_end}}, {{partition_key}}
    # none | bearer | api_key | basic | oauth2_client_credentials; secrets only from *_env or *_encrypted
    auth: {{type: bearer, token_env: ITEMS_API_TOKEN}}
    # none | page | offset | cursor | next_url | link_header
    pagination: {{type: page, page_param: page, page_size: 100}}
    records_path: data                 # dot path to the list of records in each page
  start_date: "2026-01-01"
  mappings:                            # source dot path -> destination column; transforms apply in order
    - {{source: id, target: ITEM_ID, transforms: [to_int]}}
    - {{source: name, target: NAME, transforms: [trim]}}
    - {{source: updated_at, target: UPDATED_AT, transforms: [to_timestamp]}}
  destination:
    connection:
      kind: postgres                   # oracle | postgres | duckdb
      host: db.example.internal
      port: 5432
      database: staging
      user: adu_writer
      password_env: STAGING_DB_PASSWORD
    table: public.items
    mode: upsert                       # insert | upsert
    keys: [ITEM_ID]
  checks:
    columns:
      ITEM_ID: {{not_null: true}}
    blocking: true                     # a failed check stops the run before the table is written
  # schedule: "*/30 * * * *"
"""

FILE_DROP = """\
# One asset [{name}]: every file that appears in the folder is ingested exactly once (a sensor watches it);
# a file that cannot be read moves to <folder>/quarantine with a .reason.txt.
# Field reference: `dg utils inspect-component adu_assets.FileDrop`.
type: adu_assets.FileDrop
attributes:
  name: {name}
  folder: ${{ADU_DATA_DIR}}/incoming/{name}   # ~ and ${{ENV}} are expanded
  glob: "*.csv"                        # e.g. "**/*.json"
  format: auto                         # auto (by extension) | csv | json | ndjson | parquet
  destinations: [parquet, duckdb]
  min_age_seconds: 10                  # leave files younger than this (they may still be written)
"""


class _ExampleScaffolder(Scaffolder[Any]):
    template = ""

    def scaffold(self, request: ScaffoldRequest[Any]) -> None:
        if request.scaffold_format != "yaml":
            raise ValueError(f"{request.type_name} is configured in YAML: scaffold it with --format yaml")
        text = self.template.format(name=asset_name_for(request.target_path.name))
        if request.append:
            with open(request.target_path, "a", encoding="utf-8") as f:
                f.write("---\n" + text)
        else:
            request.target_path.mkdir(parents=True, exist_ok=True)
            (request.target_path / "defs.yaml").write_text(text, encoding="utf-8")


class DatabaseExportScaffolder(_ExampleScaffolder):
    template = DATABASE_EXPORT


class ApiIngestScaffolder(_ExampleScaffolder):
    template = API_INGEST


class FileDropScaffolder(_ExampleScaffolder):
    template = FILE_DROP


def attach_scaffolders(database_export: type, api_ingest: type, file_drop: type) -> None:
    """What `@dg.scaffold_with(...)` on each class would do, kept here so the component files stay about loading."""
    scaffold_with(DatabaseExportScaffolder)(database_export)
    scaffold_with(ApiIngestScaffolder)(api_ingest)
    scaffold_with(FileDropScaffolder)(file_drop)
