"""ADU on Dagster: component types referenced from YAML as `adu_assets.<Type>`.

Plain imports: Dagster resolves `type: adu_assets.X` by looking in this module's namespace, and does not
call a module-level __getattr__.
"""

from adu_assets.components.api_ingest import ApiIngest
from adu_assets.components.database_export import DatabaseExport
from adu_assets.components.file_drop import FileDrop

__all__ = ["ApiIngest", "DatabaseExport", "FileDrop"]
