"""Freshness: has the table been updated recently enough?

For the UI and alerting, prefer Dagster's own policy on the asset spec (see `freshness_policy`): the
freshness daemon (on by default in dagster-daemon 1.13) evaluates it continuously, also when no run
happens, which is exactly when a table "stops updating". `check_freshness` is the pure rule for
callers that know a data timestamp themselves (e.g. max(incremental_column) at the source).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from adu_assets.checks.rules import CheckOutcome, FreshnessConfig, severity_for


def check_freshness(
    last_timestamp: datetime | None, max_lag_hours: float, now: datetime, *, blocking: bool = False
) -> CheckOutcome:
    severity = severity_for(blocking)
    if last_timestamp is None:
        return CheckOutcome(
            False,
            severity,
            "no timestamp: the table has never been updated",
            {"max_lag_hours": max_lag_hours},
        )
    # Naive timestamps (e.g. PostgreSQL `timestamp without time zone`) are taken as UTC.
    last = last_timestamp if last_timestamp.tzinfo else last_timestamp.replace(tzinfo=UTC)
    current = now if now.tzinfo else now.replace(tzinfo=UTC)
    lag_hours = (current - last).total_seconds() / 3600
    metadata = {
        "last_timestamp": last.isoformat(),
        "lag_hours": round(lag_hours, 3),
        "max_lag_hours": max_lag_hours,
    }
    if lag_hours > max_lag_hours:
        return CheckOutcome(
            False,
            severity,
            f"stale: last update {lag_hours:.1f} h ago, allowed {max_lag_hours:g} h",
            metadata,
        )
    return CheckOutcome(
        True, severity, f"fresh: last update {lag_hours:.1f} h ago (allowed {max_lag_hours:g} h)", metadata
    )


def freshness_policy(cfg: FreshnessConfig | None) -> dg.FreshnessPolicy | None:
    """The policy to pass as `dg.AssetSpec(..., freshness_policy=...)` for a `freshness:` YAML key.

    It warns at half the allowed lag, so the UI turns yellow before it turns red.
    """
    if cfg is None:
        return None
    fail = timedelta(hours=cfg.max_lag_hours)
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=fail / 2)
