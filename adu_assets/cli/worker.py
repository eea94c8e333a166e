"""`adu worker [--concurrency N] [--queue Q]`: a Celery worker that runs the steps of ADU's runs.

It starts the worker `dagster-celery worker start -A <app>` starts (same celery arguments, the same
dagster-celery task) with two differences a user should not have to care about:

- no config file: the app (`adu_assets.scale_out`) reads the broker from ADU_CELERY_BROKER, as the
  executor does. `dagster-celery worker start -y` would copy the broker URL, password included, into a
  plain file under DAGSTER_HOME and onto nobody's cleanup list; here it never leaves the environment and
  never appears on a command line (`ps`, logs);
- the worker replaces this process (exec) instead of running as its child, so `docker stop` or a
  Kubernetes pod deletion reaches Celery directly and it finishes the step at hand (warm shutdown).

Before that it refuses to start on storage no run would read (see adu_assets/scale_out.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run steps of ADU runs sent by ADU_EXECUTOR=celery (a Celery worker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="steps this worker runs at once (default 1: each export already uses every core in DuckDB)",
    )
    p.add_argument(
        "--queue",
        action="append",
        default=None,
        help="queue to take steps from (repeatable, at most 4; default `dagster`). Route a step with the "
        "asset tag dagster-celery/queue",
    )
    p.add_argument("--name", default=None, help="worker name (default adu-<random>@<host name>)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=run_worker)


def worker_command(args: argparse.Namespace) -> list[str]:
    """The celery command line, as `dagster-celery worker start` builds it (and nothing secret in it)."""
    from dagster_celery.cli import get_worker_name

    if args.concurrency < 1:
        raise ValueError("--concurrency must be 1 or more")
    queues = args.queue or []
    if len(queues) > 4:
        # dagster-celery's own limit (a Celery 4 bug it still guards against).
        raise ValueError("a worker listens on at most 4 queues")
    cmd = [sys.executable, "-m", "celery", "-A", "adu_assets.scale_out", "worker", "--prefetch-multiplier=1"]
    cmd += ["--loglevel", args.loglevel]
    for q in queues:
        cmd += ["-Q", q]
    name = get_worker_name(args.name) if args.name else get_worker_name(None).replace("dagster-", "adu-", 1)
    cmd += ["-n", name, "--concurrency", str(args.concurrency)]
    return cmd


def run_worker(args: argparse.Namespace) -> int:
    from adu_assets import scale_out

    try:
        cmd = worker_command(args)
        scale_out.broker_url()
        shared = scale_out.check_worker_start()
    except (ValueError, scale_out.ScaleOutError) as e:
        print(f"adu worker: {e}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    # The worker loads the same definitions as the code server; they must select the same executor.
    env[scale_out.EXECUTOR_ENV] = "celery"
    print(
        f"adu worker: data folder {shared.data_dir} (id {shared.store_id}), warehouse catalog {shared.catalog}, "
        f"broker {scale_out.without_password(scale_out.broker_url())}",
        flush=True,
    )
    print("adu worker: running", " ".join(cmd[1:]), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)
    return 0  # not reached
