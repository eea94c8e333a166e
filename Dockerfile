# One image for every Dagster process of ADU: the code server (default CMD), dagster-webserver and
# dagster-daemon (see deploy/compose.yaml). It installs only from a local wheelhouse, so the build needs
# no network once ./wheelhouse exists:
#
#     scripts/wheelhouse                       # on a machine that reaches a package index
#     docker build -t adu-assets:0.1.0 .       # anywhere; BuildKit (the default builder) is needed
#
# The base image itself must be in the local registry or loaded with `docker load` on an air-gapped host.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_INDEX=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_DISABLE_TELEMETRY=1 \
    DAGSTER_HOME=/opt/dagster/home \
    ADU_DATA_DIR=/data \
    ADU_STATE_DIR=/opt/dagster/state

# The wheelhouse is bind-mounted for this one step, so the image holds installed packages only, not
# a second copy of every wheel.
# EXTRA_PACKAGES adds what the wheelhouse was built with through WHEELHOUSE_EXTRA, e.g. a run launcher
# ("dagster-k8s==0.29.27"); see deploy/README.md.
ARG EXTRA_PACKAGES=""
# The plain install holds the whole YAML contract: evidently (drift), ydata-profiling (profile), Celery and
# Redis (ADU_EXECUTOR=celery) and the `dg` CLI are ordinary dependencies, no extra to forget.
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir --no-index --find-links /wheelhouse adu-assets ${EXTRA_PACKAGES}

# Fail the build, not a run at 02:00, if a lazily imported package is missing from the wheelhouse.
RUN YDATA_PROFILING_NO_ANALYTICS=1 DO_NOT_TRACK=1 MPLBACKEND=Agg python -W ignore -c \
    "import evidently, ydata_profiling, pandera.polars, dagster_celery, redis, dagster_dg_cli, psycopg2, psycopg"

# Discovery state is cached per defs folder (Dagster's LOCAL_FILESYSTEM defs state, in
# <folder>/.local_defs_state/). For the packaged demo that folder is inside site-packages, which the
# non-root user cannot write, and its sources are generated files: so discover it now, once, as root.
# A user's own catalog (ADU_DEFS_DIR, mounted at run time) needs its databases for discovery, which a
# build cannot reach: its state is written beside the YAML on first load, or by
# `docker compose run --rm code adu refresh-state`, and survives in the mounted folder.
RUN export ADU_DATA_DIR=/tmp/adu-demo \
    && python -c "from adu_assets.demo import ensure_demo_sources; ensure_demo_sources()" \
    && adu refresh-state \
    && rm -rf /tmp/adu-demo

RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && mkdir -p /opt/dagster/home/storage /opt/dagster/state /data \
    && chown -R dagster:dagster /opt/dagster /data

# PostgreSQL run storage, configured only through DAGSTER_PG_* variables (the password never lands in a
# file). compose.yaml mounts the same files read-only, so edits need no rebuild.
COPY --chown=dagster:dagster deploy/dagster.yaml /opt/dagster/home/dagster.yaml
COPY --chown=dagster:dagster deploy/workspace.yaml /opt/dagster/workspace.yaml

USER dagster
WORKDIR /opt/dagster
VOLUME ["/data"]
EXPOSE 4000

# The code server: serves the definitions over gRPC to the webserver and the daemon, and starts run
# workers (DefaultRunLauncher) in this container. `dagster api grpc` is the older, lower-level form.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "adu_assets.definitions", "--location-name", "adu_assets"]
