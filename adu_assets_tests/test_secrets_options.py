"""`connection.options` cannot re-point a connection: refused when definitions load, quoted when used.

The attack from issue 12: `options: {application_name: "adu dbname=injected_db"}` went unquoted into the
libpq string of DuckDB's ATTACH and connected to another database. Here it must connect to the configured
database, with the whole text as the application name, over both roads to PostgreSQL (DuckDB's postgres
extension for sources, psycopg for the upsert destination); `host=`, `dbname=`, `sslmode=` tricks and
unknown names are refused at load, without echoing the refused value.
"""

from pathlib import Path
from typing import Any

import pytest

from adu_assets.io_managers.upsert import postgres as pg_upsert
from adu_assets.io_managers.upsert.base import DestinationConfig
from adu_assets.sources.connection import ConnectionConfig, libpq_quote
from adu_assets.sources.databases import SOURCE_ALIAS, attach_source, new_duckdb
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load_problems, write_component
from adu_assets_tests.pg_server import PgServer

INJECTION = "adu dbname=injected_db"


@pytest.fixture
def two_databases(pg: PgServer, pg_db: str) -> str:
    """`pg_db` (the configured one, holding a `marker` table saying so) and `injected_db` beside it."""
    with pg.connect() as conn:
        conn.execute('DROP DATABASE IF EXISTS "injected_db" WITH (FORCE)')
        conn.execute('CREATE DATABASE "injected_db"')
    for db in (pg_db, "injected_db"):
        with pg.connect(db) as conn:
            conn.execute("CREATE TABLE marker (name text)")
            conn.execute("INSERT INTO marker VALUES (%s)", (db,))
    return pg_db


def conn_cfg(pg: PgServer, db: str, **changes: Any) -> ConnectionConfig:
    return ConnectionConfig.model_validate({**pg_connection_yaml(pg, db), **changes})


def test_libpq_quote() -> None:
    assert libpq_quote("plain") == "'plain'"
    assert libpq_quote("a b=c") == "'a b=c'"
    assert libpq_quote("it's") == r"'it\'s'"
    assert libpq_quote("back\\slash' dbname=x") == r"'back\\slash\' dbname=x'"


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"host": "evil.example"}, "options.host is not accepted for kind postgres"),
        ({"hostaddr": "10.0.0.9"}, "options.hostaddr is not accepted"),
        ({"dbname": "injected_db"}, "options.dbname is not accepted"),
        ({"user": "postgres"}, "options.user is not accepted"),
        (
            {"password": "Opt-Secret-55aa"},
            "options may not contain password: put the password in password_env",
        ),
        ({"passfile": "/tmp/x"}, "options may not contain passfile"),
        ({"service": "other"}, "options.service is not accepted"),
        ({"sslmode": "disable host=evil"}, "options.sslmode must be one of"),
        ({"sslmode": "off"}, "options.sslmode must be one of"),
        ({"connect_timeout": "5 dbname=x"}, "options.connect_timeout must be a whole number"),
        ({"application_name": "two\nlines"}, "options.application_name must be non-empty text on one line"),
    ],
)
def test_refused_options_name_the_field(options: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as err:
        ConnectionConfig(kind="postgres", host="db", database="d", options=options)
    assert "Opt-Secret-55aa" not in str(err.value)


@pytest.mark.parametrize(
    "kind, extra, options, fragment",
    [
        (
            "oracle",
            {"service": "ORCL"},
            {"dsn": "evil:1521/X"},
            "options.dsn is not accepted for kind oracle",
        ),
        ("oracle", {"service": "ORCL"}, {"https_proxy": "evil"}, "options.https_proxy is not accepted"),
        ("oracle", {"service": "ORCL"}, {"protocol": "udp"}, "options.protocol must be one of tcp, tcps"),
        (
            "vertica",
            {"database": "v"},
            {"backup_server_node": "evil:5433"},
            "backup_server_node is not accepted",
        ),
        ("vertica", {"database": "v"}, {"log_path": "/etc/x"}, "options.log_path is not accepted"),
        ("duckdb", {"path": "/tmp/x.duckdb"}, {"access_mode": "READ_WRITE"}, "accepted: none"),
    ],
)
def test_refused_options_other_kinds(
    kind: str, extra: dict[str, str], options: dict[str, str], fragment: str
) -> None:
    host = {} if kind == "duckdb" else {"host": "db"}
    with pytest.raises(ValueError, match=fragment):
        ConnectionConfig.model_validate({"kind": kind, **host, **extra, "options": options})


@pytest.mark.parametrize(
    "field, value",
    [
        ("host", "db dbname=other"),
        ("host", "db'x"),
        ("service", "ORCL?transport_connect_timeout=1"),
        ("service", "X)(HOST=evil"),
    ],
)
def test_address_fields_cannot_carry_more_keys(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"connection.{field} must be"):
        ConnectionConfig.model_validate({"kind": "oracle", "host": "db", "service": "ORCL", field: value})


def test_typed_options_are_converted() -> None:
    cfg = ConnectionConfig.model_validate(
        {
            "kind": "oracle",
            "host": "db",
            "service": "ORCL",
            "options": {"tcp_connect_timeout": 2.5, "retry_count": 3, "ssl_server_dn_match": True},
        }
    )
    assert cfg.driver_options() == {"tcp_connect_timeout": 2.5, "retry_count": 3, "ssl_server_dn_match": True}
    pgcfg = ConnectionConfig(
        kind="postgres", host="db", database="d", options={"connect_timeout": "7", "sslmode": "prefer"}
    )
    assert pgcfg.libpq_options() == "connect_timeout='7' sslmode='prefer'"


def test_refused_at_definitions_load_without_echoing_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg: PgServer
) -> None:
    conn = {
        **pg_connection_yaml(pg, "chinook"),
        "options": {"password": "Load-Secret-77cc", "host": "evil", "sslmode": "Load-Secret-88dd"},
    }
    write_component(
        tmp_path / "defs",
        "x",
        "adu_assets.DatabaseExport",
        {"name": "x", "connection": conn, "start_date": "2021-01-01", "tables": [{"name": "genre"}]},
    )
    # The file is a load problem (a sensor's skip reason and a log line) that names the field, not the value.
    text = load_problems(tmp_path / "defs", monkeypatch)
    assert "connection.options may not contain password" in text
    assert "Load-Secret-77cc" not in text and "Load-Secret-88dd" not in text


def test_injection_in_application_name_stays_in_the_configured_database_duckdb(
    pg: PgServer, two_databases: str, pg_password_env: str
) -> None:
    cfg = conn_cfg(pg, two_databases, options={"application_name": INJECTION, "connect_timeout": "10"})
    con = new_duckdb()
    try:
        attach_source(con, cfg, label="test")
        (marker,) = con.execute(f"SELECT name FROM {SOURCE_ALIAS}.public.marker").fetchone()  # type: ignore[misc]
        db, app = con.execute(
            f"SELECT * FROM postgres_query('{SOURCE_ALIAS}', "
            "'SELECT current_database()::text, current_setting(''application_name'')')"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    assert (marker, db) == (two_databases, two_databases)
    assert app == INJECTION


def test_quote_and_backslash_in_an_option_value_duckdb(
    pg: PgServer, two_databases: str, pg_password_env: str
) -> None:
    name = "it's \\ dbname='injected_db'"
    cfg = conn_cfg(pg, two_databases, options={"application_name": name})
    con = new_duckdb()
    try:
        attach_source(con, cfg, label="test")
        db, app = con.execute(
            f"SELECT * FROM postgres_query('{SOURCE_ALIAS}', "
            "'SELECT current_database()::text, current_setting(''application_name'')')"
        ).fetchone()  # type: ignore[misc]
    finally:
        con.close()
    assert (db, app) == (two_databases, name)


def test_injection_in_database_name_does_not_reach_another_database_duckdb(
    pg: PgServer, two_databases: str, pg_password_env: str
) -> None:
    # The database name travels in DuckDB's secret; an injected key there must not be obeyed either.
    cfg = conn_cfg(pg, "no_such_db dbname=injected_db")
    con = new_duckdb()
    try:
        with pytest.raises(Exception) as err:
            attach_source(con, cfg, label="test")
            con.execute(f"SELECT name FROM {SOURCE_ALIAS}.public.marker").fetchall()
    finally:
        con.close()
    assert "does not exist" in str(err.value)


def test_injection_in_application_name_stays_in_the_configured_database_psycopg(
    pg: PgServer, two_databases: str, pg_password_env: str
) -> None:
    dest = DestinationConfig(
        connection=conn_cfg(pg, two_databases, options={"application_name": INJECTION, "sslmode": "disable"}),
        table="marker",
        mode="insert",
    )
    conn = pg_upsert.connect(dest)
    try:
        db, app = conn.execute("SELECT current_database(), current_setting('application_name')").fetchone()
        (marker,) = conn.execute("SELECT name FROM marker").fetchone()
    finally:
        conn.close()
    assert (db, app, marker) == (two_databases, INJECTION, two_databases)
