"""ADU on Dagster: component types referenced from YAML as `adu_assets.<Type>`."""

from adu_assets.components.database_export import DatabaseExport

__all__ = ["DatabaseExport"]
