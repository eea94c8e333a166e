"""Sensors: new rows at the source (watermark) and per-source pool limits.

Watermark sensor `<name>_watermark_sensor`
------------------------------------------
Every tick reads `max(incremental_column)` of every watched table in one query (a UNION ALL that runs
inside PostgreSQL through `postgres_query`, or over the attached DuckDB/SQLite file, or directly on
Vertica), so 200 tables cost one round trip, and each `max()` is an index lookup when the column is
indexed. The cursor is JSON `{table: ISO timestamp}`: the highest value already handled.

- A table whose max moved from P to M gets every daily partition from P's day to M's day requested
  (P's own day too, since rows after P can still fall on it).
- Partitions that do not exist yet (today's, or a future day's) are not requested; that table's cursor
  stops at the start of the first missing partition, so the day is requested once it has ended.
- First tick for a table (no cursor entry): the watermark is recorded and only the latest partition
  holding rows is requested, not the whole history (that is a backfill, started from the UI).
- One run per partition, selecting every table with new rows in it: Dagster's start-up cost per run is
  seconds, so 200 tables with new rows today make one run, not 200. At most `max_requests_per_tick`
  partitions are requested per tick, oldest first; the cursor keeps the rest for the next tick.
- Rows inserted with a value at or below the watermark are not seen (inherent to watermarks); the
  daily schedule covers them.
- A table that cannot be read (dropped, column renamed) is logged by name and skipped; the others go on.
- The sensor is behind the same circuit breaker as the schedule: after N failed runs it launched in a
  row, it skips (cursor unchanged) until `adu_resume_<name>` runs.

Pool limits
-----------
Dagster 1.13 takes pool limits from the instance, not from code: `dagster instance concurrency set
<pool> <limit>` or the storage call behind it. `apply_pool_limits` makes the instance match the YAML
`max_parallel` of each connection, and `pool_limits_sensor` calls it from the daemon every minute, so
an edited YAML takes effect without any command.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from adu_assets.automation.circuit_breaker import SENSOR_TAG, check_breaker
from adu_assets.sources.catalog import quote_ident, quote_literal
from adu_assets.sources.connection import ConnectionConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUESTS_PER_TICK = 25


@dataclass(frozen=True)
class WatermarkSpec:
    """What a watermark sensor watches: `tables` maps table -> incremental column, `asset_keys` table -> key."""

    connection: ConnectionConfig
    schema: str
    tables: dict[str, str]
    asset_keys: dict[str, dg.AssetKey]
    minimum_interval_seconds: int = 300
    max_requests_per_tick: int = DEFAULT_MAX_REQUESTS_PER_TICK
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING


def watermark_sensor_name(component_name: str) -> str:
    return f"{component_name}_watermark_sensor"


# --- reading the watermarks -------------------------------------------------------------------------


@dataclass
class Watermarks:
    maxima: dict[str, datetime | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def union_sql(schema: str, tables: Mapping[str, str], *, prefix: str = "") -> str:
    """One statement giving (table, max as text) per table. Text, because the columns' types differ
    (date, timestamp, timestamptz) and a UNION needs one type; the text keeps any UTC offset."""
    parts = [
        f"SELECT {quote_literal(table)} AS t, CAST(max({quote_ident(column)}) AS VARCHAR) AS v "
        f"FROM {prefix}{quote_ident(schema)}.{quote_ident(table)}"
        for table, column in tables.items()
    ]
    return "\nUNION ALL\n".join(parts)


def read_watermarks(
    cfg: ConnectionConfig, schema: str, tables: Mapping[str, str], *, label: str
) -> Watermarks:
    """Max of each table's column. A source that cannot be opened raises (the tick fails visibly); a table
    that cannot be read is reported in `errors` and the others are still read."""
    if not tables:
        return Watermarks()
    prefix = _prefix(cfg)
    with _source_runner(cfg, label=label) as run:
        try:
            return _parse(run(union_sql(schema, tables, prefix=prefix)))
        except Exception as e:
            if len(tables) == 1:
                return Watermarks(errors={next(iter(tables)): _scrubbed(e)})
        # One bad table (dropped, column renamed) must not blind the sensor to the rest: find it by asking
        # each table on its own, over the same connection. Only happens when the combined query failed.
        result = Watermarks()
        for table, column in tables.items():
            try:
                one = _parse(run(union_sql(schema, {table: column}, prefix=prefix)))
            except Exception as e:
                result.errors[table] = _scrubbed(e)
                continue
            result.maxima.update(one.maxima)
            result.errors.update(one.errors)
        return result


def _prefix(cfg: ConnectionConfig) -> str:
    return "" if cfg.kind in ("postgres", "vertica") else "src."


Rows = list[tuple[str, str | None]]


@contextmanager
def _source_runner(cfg: ConnectionConfig, *, label: str) -> Iterator[Callable[[str], Rows]]:
    """A function running one watermark query on an open source connection."""
    if cfg.kind == "vertica":
        from adu_assets.sources import vertica

        conn = vertica.connect_vertica(cfg)

        def run_vertica(sql: str) -> Rows:
            cur = conn.cursor()
            cur.execute(sql)
            return [(str(t), None if v is None else str(v)) for t, v in cur.fetchall()]

        try:
            yield run_vertica
        finally:
            conn.close()
        return
    from adu_assets.sources.databases import SOURCE_ALIAS, open_source

    with open_source(cfg, label=label) as con:

        def run_attached(sql: str) -> Rows:
            if cfg.kind == "postgres":
                # postgres_query runs the whole UNION inside PostgreSQL: one round trip, max() on the server.
                rows = con.execute(
                    f"SELECT t, v FROM postgres_query({quote_literal(SOURCE_ALIAS)}, ?)", [sql]
                ).fetchall()
            else:
                rows = con.execute(sql).fetchall()
            return [(str(t), None if v is None else str(v)) for t, v in rows]

        yield run_attached


def _parse(rows: Rows) -> Watermarks:
    from adu_assets.sources.databases import new_duckdb

    result = Watermarks()
    texts = [(t, v) for t, v in rows if v is not None]
    for t, v in rows:
        if v is None:
            result.maxima[t] = None  # empty table
    if not texts:
        return result
    # DuckDB parses every textual form the sources print (with or without offset, dates, fractions)
    # the same way the export's partition expression does: naive values are taken as UTC.
    con = new_duckdb()
    try:
        parsed = con.execute(
            "SELECT t, epoch_us(TRY_CAST(v AS TIMESTAMPTZ)) FROM (SELECT unnest(?) AS t, unnest(?) AS v)",
            [[t for t, _ in texts], [v for _, v in texts]],
        ).fetchall()
    finally:
        con.close()
    for (t, us), (_, v) in zip(parsed, texts, strict=True):
        if us is None:
            result.errors[t] = f"max value {v!r} is not a date or timestamp"
        else:
            result.maxima[t] = datetime.fromtimestamp(us / 1_000_000, UTC)
    return result


def _scrubbed(exc: BaseException) -> str:
    from adu_assets.secrets import redact

    return redact(f"{type(exc).__name__}: {exc}")[:500]


# --- deciding which partitions to run -------------------------------------------------------------


@dataclass
class WatermarkPlan:
    tables_by_partition: dict[str, list[str]]
    cursor: dict[str, str]
    notes: list[str] = field(default_factory=list)


def plan_runs(
    partitions_def: dg.TimeWindowPartitionsDefinition,
    cursor: Mapping[str, str],
    maxima: Mapping[str, datetime | None],
    *,
    now: datetime,
    limit: int,
) -> WatermarkPlan:
    """Pure: which partitions each table needs, and the cursor to store afterwards."""
    with dg.partition_loading_context(effective_dt=now):
        first_key = partitions_def.get_first_partition_key()
        last_window = partitions_def.get_last_partition_window()
    new_cursor = {t: v for t, v in cursor.items() if t in maxima}
    plan = WatermarkPlan({}, new_cursor)
    if first_key is None or last_window is None:
        plan.notes.append("no partition has ended yet")
        return plan
    first_start = partitions_def.time_window_for_partition_key(first_key).start
    last_end = last_window.end

    needed: dict[str, list[tuple[datetime, str]]] = {}
    final: dict[str, datetime] = {}
    for table, high in maxima.items():
        if high is None:
            continue
        previous = _parse_iso(cursor.get(table))
        if previous is not None and high <= previous:
            continue
        # The watermark can only ever be stored up to the end of the last existing partition.
        final[table] = high if high < last_end else max(last_end, previous or last_end)
        if high < first_start:
            continue
        top = min(high, last_end - _TICK)
        bottom = top if previous is None else max(previous, first_start)
        if bottom > top:
            continue
        keys = _keys_between(partitions_def, bottom, top)
        needed[table] = [(partitions_def.time_window_for_partition_key(k).start, k) for k in keys]

    ordered = sorted({item for items in needed.values() for item in items})
    chosen = {k for _, k in ordered[:limit]}
    for table, items in needed.items():
        for _, key in items:
            if key in chosen:
                plan.tables_by_partition.setdefault(key, []).append(table)
        left = [start for start, key in items if key not in chosen]
        # Partitions beyond the per-tick limit: resume from the first one next tick.
        final[table] = min(left) if left else final[table]
    for table, value in final.items():
        plan.cursor[table] = value.isoformat()
    if len(ordered) > limit:
        plan.notes.append(f"{len(ordered) - limit} more partitions left for the next tick (limit {limit})")
    return plan


# A microsecond: "just before the end of the last window" keeps a timestamp inside that window.
_TICK = datetime(2000, 1, 1, 0, 0, 0, 1) - datetime(2000, 1, 1)


def _keys_between(partitions_def: dg.TimeWindowPartitionsDefinition, lo: datetime, hi: datetime) -> list[str]:
    lo_key = partitions_def.get_partition_key_for_timestamp(lo.timestamp())
    hi_key = partitions_def.get_partition_key_for_timestamp(hi.timestamp())
    return list(partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(lo_key, hi_key)))


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_cursor(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


# --- the sensor -----------------------------------------------------------------------------------


def watermark_sensor(
    *,
    component_name: str,
    job: UnresolvedAssetJobDefinition,
    partitions_def: dg.PartitionsDefinition,
    spec: WatermarkSpec,
    max_consecutive_failures: int,
) -> dg.SensorDefinition:
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise ValueError(
            f"{component_name}: the watermark sensor needs time-window partitions, got {type(partitions_def).__name__}"
        )
    time_partitions: dg.TimeWindowPartitionsDefinition = partitions_def
    missing = sorted(set(spec.tables) - set(spec.asset_keys))
    if missing:
        raise ValueError(f"{component_name}: watermark tables without an asset key: {', '.join(missing)}")
    name = watermark_sensor_name(component_name)

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=spec.minimum_interval_seconds,
        default_status=spec.default_status,
        description=(
            f"Polls max() of {len(spec.tables)} incremental columns in {spec.schema} and runs the partitions "
            f"that got new rows (at most {spec.max_requests_per_tick} per tick)."
        ),
        tags={"adu/component": component_name},
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        skip = check_breaker(
            context.instance,
            job_name=job.name,
            launcher_tag=(SENSOR_TAG, name),
            component_name=component_name,
            max_consecutive_failures=max_consecutive_failures,
        )
        if skip is not None:
            return skip
        marks = read_watermarks(spec.connection, spec.schema, spec.tables, label=component_name)
        for table, error in sorted(marks.errors.items()):
            context.log.warning(
                f"{component_name}: cannot read the watermark of {spec.schema}.{table}: {error}"
            )
        plan = plan_runs(
            time_partitions,
            load_cursor(context.cursor),
            marks.maxima,
            now=datetime.now(UTC),
            limit=spec.max_requests_per_tick,
        )
        for note in plan.notes:
            context.log.info(note)
        requests = []
        for partition, tables in sorted(plan.tables_by_partition.items()):
            marks_of = ",".join(f"{t}={plan.cursor.get(t)}" for t in sorted(tables))
            requests.append(
                dg.RunRequest(
                    partition_key=partition,
                    asset_selection=[spec.asset_keys[t] for t in sorted(tables)],
                    run_key=f"{partition}:{hashlib.sha1(marks_of.encode()).hexdigest()[:16]}",
                    tags={"adu/trigger": "watermark", "adu/tables": _short_list(tables)},
                )
            )
        cursor = json.dumps(plan.cursor, sort_keys=True)
        if not requests:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"no new rows in {len(marks.maxima)} tables"
                    + (f"; {len(marks.errors)} unreadable (see the tick log)" if marks.errors else "")
                ),
                cursor=cursor,
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _sensor


def _short_list(tables: list[str]) -> str:
    text = ",".join(sorted(tables))
    # Tag values are limited in size; the full selection is on the run itself.
    return text if len(text) <= 200 else text[:190] + f"... ({len(tables)})"


# --- pool limits ----------------------------------------------------------------------------------


def apply_pool_limits(
    instance: dg.DagsterInstance, limits: Mapping[str, int]
) -> dict[str, tuple[int | None, int]]:
    """Set each pool's limit on the instance; returns {pool: (old, new)} for the pools that changed."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        raise RuntimeError(
            "this Dagster instance's storage has no pool limits; run `dagster instance migrate` first"
        )
    current = {p.name: p for p in storage.get_pool_limits()}
    changed: dict[str, tuple[int | None, int]] = {}
    for pool, limit in sorted(limits.items()):
        known = current.get(pool)
        # A limit that came from `default_limit` is replaced too: the YAML is more specific.
        if known is not None and known.limit == limit and not known.from_default:
            continue
        storage.set_concurrency_slots(pool, limit)
        changed[pool] = (known.limit if known else None, limit)
    return changed


def merge_pool_limits(pairs: list[tuple[str, int]]) -> dict[str, int]:
    """Pools named by several components: the smallest max_parallel wins, so no YAML's promise is broken."""
    merged: dict[str, int] = {}
    for pool, limit in pairs:
        merged[pool] = min(limit, merged.get(pool, limit))
    return merged


POOL_LIMITS_SENSOR = "adu_pool_limits_sensor"


def pool_limits_sensor(limits: Mapping[str, int], *, name: str = POOL_LIMITS_SENSOR) -> dg.SensorDefinition:
    wanted = dict(limits)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Keeps each source connection's pool limit equal to its YAML max_parallel.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        changed = apply_pool_limits(context.instance, wanted)
        for pool, (old, new) in changed.items():
            context.log.info(f"pool {pool}: limit {old} -> {new}")
        summary = ", ".join(f"{p}={n}" for p, n in sorted(wanted.items())) or "none"
        return dg.SkipReason(f"pool limits in sync ({summary}); changed {len(changed)}")

    return _sensor
