"""Retries: step-level for flaky networks, run-level for crashed infrastructure.

Step level (code): `network_retry_policy()` goes on every asset that talks to a network (database exports,
API ingestion). A step that raises is retried in the same run, 3 times, after about 10 s, 20 s and 40 s,
each delay moved by up to its own size at random (`Jitter.PLUS_MINUS`), so parallel steps that failed
together on a restarted server do not all come back in the same second. Errors that retrying cannot fix
(a 401, a missing table, bad YAML) should raise `dagster.Failure(allow_retries=False)` so they fail at once.

Run level (dagster.yaml, handled by the daemon): a run whose process died (OOM kill, node restart, lost
code server) is re-launched, but a run that failed because an asset raised is not, since the step policy
above has already retried it and a fourth attempt would only delay the circuit breaker:

    run_retries:
      enabled: true
      max_retries: 2
      retry_on_asset_or_op_failure: false

The circuit breaker counts a run and its automatic retries as one attempt (it groups by
`dagster/root_run_id`), so run retries do not trip it early.
"""

import dagster as dg

NETWORK_RETRIES = 3
NETWORK_RETRY_DELAY_S = 10


def network_retry_policy() -> dg.RetryPolicy:
    """3 retries, exponential backoff from 10 s, with jitter; for assets that read or write over a network."""
    return dg.RetryPolicy(
        max_retries=NETWORK_RETRIES,
        delay=NETWORK_RETRY_DELAY_S,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


RUN_RETRIES_YAML = """\
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
"""
