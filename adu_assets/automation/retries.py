"""Retries: one layer per cause, and only for causes that can go away by themselves.

Step level (code): `network_retry_policy()` goes on every asset that talks to a network (database exports,
API ingestion). A step that raises is retried in the same run, 3 times, after about 10 s, 20 s and 40 s,
each delay moved by up to its own size at random (`Jitter.PLUS_MINUS`), so parallel steps that failed
together on a restarted server do not all come back in the same second.

A RetryPolicy retries every exception except `dagster.Failure(allow_retries=False)`, so the code that runs
inside such a step passes its errors through `step_error()`: a transient cause (connection reset or refused,
timeout, lock conflict, deadlock, "database is locked", too many connections) is re-raised for the policy
to retry; anything else (a value out of range for its column, a negative interval Parquet cannot store,
"table already exists", a missing table, bad YAML) becomes `Failure(allow_retries=False)` and fails at
once, with the cause in the message. Retrying those only cost minutes and four identical error reports.

HTTP is retried in one layer only: the API client retries 429/5xx and dropped connections itself (with the
server's Retry-After), so an API error that leaves the client is final and the step does not repeat it:
a failing 500 costs `retry.max_attempts` requests, not that times four.

Run level (dagster.yaml, handled by the daemon): a run whose process died (OOM kill, node restart, lost
code server) is failed by run monitoring and re-launched, but a run that failed because an asset raised is
not, since the step policy above has already retried what can be retried:

    run_retries:
      enabled: true
      max_retries: 2
      retry_on_asset_or_op_failure: false

The circuit breaker counts a run and its automatic retries as one attempt (it groups by
`dagster/root_run_id`), so run retries do not trip it early.
"""

from __future__ import annotations

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

# Messages that say the same request will fail again, even when they mention a connection
# ("connection to server ... failed: FATAL: password authentication failed").
_PERMANENT_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "ora-01017",  # invalid username/password
    "ora-28000",  # account locked
    "permission denied",
    "does not exist",
    "already exists",
    "out of range",
    "negative interval",
)

# Messages of causes that go away by themselves: networks, restarts, locks held by someone else.
_TRANSIENT_MARKERS = (
    "connection reset",
    "connection refused",
    "connection aborted",
    "connection timed out",
    "timed out",
    "timeout expired",
    "broken pipe",
    "server closed the connection",
    "could not connect to server",
    "unable to connect to postgres",
    "terminating connection",
    "connection is closed",
    "ssl syscall error",
    "network is unreachable",
    "no route to host",
    "temporarily unavailable",
    "too many connections",
    "too many clients",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "database is locked",
    "could not set lock on file",
    "write-write conflict",
    "conflict on tuple",
    "transaction conflict",
    "deadlock",
    "could not serialize access",
    "could not obtain lock",
    "lock timeout",
    "ora-00054",  # resource busy
    "ora-00060",  # deadlock
    "ora-03113",  # end-of-file on communication channel
    "ora-03114",  # not connected
    "ora-03135",  # connection lost contact
    "ora-12170",  # connect timeout
    "ora-12541",  # no listener
    "dpy-4011",  # connection closed
)

# SQLSTATE classes/codes (PostgreSQL, psycopg's `sqlstate`) of the same transient causes.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _type_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_transient(exc: BaseException) -> bool:
    """True for causes a later attempt can get past: a dropped or refused connection, a timeout, a
    lock or write conflict, a server (re)starting. False for everything a retry would only repeat."""
    chain = _chain(exc)
    text = " | ".join(str(e) for e in chain).lower()
    if any(m in text for m in _PERMANENT_MARKERS):
        return False
    for e in chain:
        names = _type_names(e)
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        # httpx (TransportError covers timeouts and dropped connections), DuckDB's write-write conflict.
        if names & {"TransportError", "TimeoutException", "NetworkError", "TransactionException"}:
            return True
        sqlstate = getattr(e, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
        status = getattr(e, "status", None)
        if "ApiHttpError" in names and isinstance(status, int) and (status in (408, 429) or status >= 500):
            return True
    return any(m in text for m in _TRANSIENT_MARKERS)


def step_error(exc: BaseException, what: str) -> BaseException:
    """What a step raises for `exc`, to be raised `from None`: a transient cause as a scrubbed RuntimeError
    (the step's RetryPolicy retries it), anything else as `Failure(allow_retries=False)` naming the cause.
    Messages go through secret redaction: a driver error can carry a connection string."""
    from adu_assets.secrets import redact

    if isinstance(exc, dg.Failure):
        return exc
    message = redact(f"{what}: {type(exc).__name__}: {exc}")
    if is_transient(exc):
        return RuntimeError(message)
    return dg.Failure(
        description=f"{message} (not retried: the same data or settings would fail the same way)",
        allow_retries=False,
    )
