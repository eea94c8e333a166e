"""ADU on Dagster: component types referenced from YAML as `adu_assets.<Type>`."""

from adu_assets.components.api_ingest import ApiIngest
from adu_assets.components.database_export import DatabaseExport

__all__ = ["ApiIngest", "DatabaseExport"]
