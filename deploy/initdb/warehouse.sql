-- Run once by the postgres image on an empty data volume: the DuckLake warehouse catalog
-- (ADU_WAREHOUSE_CATALOG in compose.yaml), beside Dagster's own history database.
CREATE DATABASE adu_warehouse OWNER dagster;
