"""ADU on Dagster: component types referenced from YAML as `adu_assets.<Type>`.

Plain imports: Dagster resolves `type: adu_assets.X` by looking in this module's namespace, and does not
call a module-level __getattr__.
"""

from adu_assets.components.api_ingest import ApiIngest
from adu_assets.components.database_export import DatabaseExport
from adu_assets.components.field_docs import document_fields
from adu_assets.components.file_drop import FileDrop
from adu_assets.components.scaffolders import attach_scaffolders

# Before Dagster derives any YAML model from them: every field's description shows in `dg` and the editor.
document_fields(ApiIngest, DatabaseExport, FileDrop)
# `dg scaffold defs adu_assets.<Type> <folder>` writes a commented example that passes `dg check defs`.
attach_scaffolders(DatabaseExport, ApiIngest, FileDrop)

__all__ = ["ApiIngest", "DatabaseExport", "FileDrop"]
