"""ADU on Dagster: component types referenced from YAML as `adu_assets.<Type>`.

Plain imports: Dagster resolves `type: adu_assets.X` by looking in this module's namespace, and does not
call a module-level __getattr__.
"""

import warnings

from adu_assets.components.api_ingest import ApiIngest
from adu_assets.components.database_export import DatabaseExport
from adu_assets.components.field_docs import document_fields
from adu_assets.components.file_drop import FileDrop
from adu_assets.components.scaffolders import attach_scaffolders

# Before Dagster derives any YAML model from them: every field's description shows in `dg` and the editor.
document_fields(ApiIngest, DatabaseExport, FileDrop)
# `dg scaffold defs adu_assets.<Type> <folder>` writes a commented example that passes `dg check defs`.
attach_scaffolders(DatabaseExport, ApiIngest, FileDrop)

# A component's schedule job covers its incremental tables (several days per run) and its snapshot tables
# (one day per run), so Dagster warns that it falls back to one partition per run for that job. That is
# what a schedule does anyway, and a user cannot act on it: keep it out of `dg check defs` and every run.
warnings.filterwarnings(
    "ignore", message=r"Asset job .* materializes assets with varying BackfillPolicies", category=UserWarning
)

__all__ = ["ApiIngest", "DatabaseExport", "FileDrop"]
