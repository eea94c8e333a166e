"""The type map: how each source column is read so that every value lands exactly.

A reader asks here, per column, for a `ColumnRead`: an optional expression evaluated by the source itself
(`source_expr`, in the source's SQL, e.g. ``"n"::text`` in PostgreSQL) and the DuckDB expression over what
arrives (`select_expr`). Both destinations land the output of that one SELECT, so Parquet and the warehouse
hold the same values. Everything the SELECT produces has an exact Parquet type; anything landed in another
form than its source type carries a `note` (the `type_notes` of every materialization).

Why the forms chosen (README, "Type map"):
- PostgreSQL `numeric`: DuckDB's DECIMAL holds 38 digits. A constrained numeric(p<=38,s) lands as DECIMAL(p,s).
  Wider or unconstrained columns are probed once (largest magnitude, largest scale, NaN/Infinity count over
  the rows being exported); values that fit land as DECIMAL(38,s) (unconstrained: s at least 10 when the
  values leave room, so the type is stable from run to run), else as exact text. NaN and Infinity have
  no DECIMAL form (the postgres scanner turns them into 0), so a column holding them lands as text.
- intervals land as text in DuckDB's interval syntax: Parquet's INTERVAL cannot hold negative parts and
  polars cannot read DuckDB intervals; `CAST(col AS INTERVAL)` gives the exact value back.
- TIME WITH TIME ZONE lands as text: Parquet keeps only the UTC time of day, the offset would be lost.
- enums land as text; json/jsonb as DuckDB's JSON type (the text is kept as it came).
- HUGEINT/UHUGEINT land as DECIMAL(38,0) when every value fits, else as text (Parquet has no 128-bit int
  and DuckDB would otherwise write them as DOUBLE).

A YAML `cast: {column: double}` (or text, bigint, integer, decimal(p,s)) overrides the map for one column;
that is the only way a lossy form is chosen, and it is noted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from adu_assets.sources.catalog import quote_ident, quote_literal

MAX_DECIMAL_PRECISION = 38
# Unconstrained numeric lands as DECIMAL(38, S): S is at least this when the values leave room for it.
UNCONSTRAINED_MIN_SCALE = 10

# Words a YAML `cast:` may use, and the DuckDB type each lands as.
CAST_WORDS = {
    "double": "DOUBLE",
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "integer": "INTEGER",
}
_DECIMAL_CAST = re.compile(r"^\s*decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$", re.IGNORECASE)


class NotExact(ValueError):
    """A column cannot be landed exactly and no `cast:` says what to do instead."""


def cast_target(word: str) -> str:
    """The DuckDB type for a `cast:` word; ValueError naming the allowed words otherwise."""
    w = word.strip().lower()
    if w in CAST_WORDS:
        return CAST_WORDS[w]
    m = _DECIMAL_CAST.match(w)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if 1 <= p <= MAX_DECIMAL_PRECISION and s <= p:
            return f"DECIMAL({p},{s})"
    raise ValueError(
        f"cast {word!r} is not one of: {', '.join(CAST_WORDS)}, decimal(p,s) with p at most "
        f"{MAX_DECIMAL_PRECISION}"
    )


@dataclass(frozen=True)
class ColumnRead:
    """How one column is read. `source_expr` is None when the column is read as the source gives it."""

    name: str
    select_expr: str
    source_expr: str | None = None
    note: str | None = None


def plain(name: str) -> ColumnRead:
    return ColumnRead(name, quote_ident(name))


def duck_cast(name: str, duck_type: str, note: str | None = None) -> ColumnRead:
    q = quote_ident(name)
    return ColumnRead(name, f"CAST({q} AS {duck_type}) AS {q}", note=note)


def _pg_cast_type(duck_type: str) -> str:
    return {
        "DOUBLE": "double precision",
        "VARCHAR": "text",
        "BIGINT": "bigint",
        "INTEGER": "integer",
    }.get(duck_type, duck_type.lower().replace("decimal", "numeric"))


def cast_note(name: str, source_type: str, word: str) -> str:
    return f"{name}: {source_type} cast to {word} as the YAML asks (cast:)"


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgColumn:
    """A column as PostgreSQL's catalog describes it; `base` is the type a domain stands for."""

    name: str
    declared: str  # format_type(), e.g. numeric(10,2), year, mood, interval
    base: str  # the domain's base type, else the declared type
    typtype: str  # b base, d domain, e enum, c composite, r range, m multirange, p pseudo
    category: str  # pg_type.typcategory of the base: A array, N numeric, ...
    element: str | None  # for arrays: the element type
    nullable: bool = True


@dataclass
class NumericProbe:
    """What one probe found in a numeric column over the rows being exported."""

    specials: int = 0  # NaN, Infinity, -Infinity
    max_abs: str | None = None  # largest magnitude, as PostgreSQL's exact text
    max_scale: int | None = None

    @property
    def integer_digits(self) -> int:
        if self.max_abs is None:
            return 0
        try:
            return len(str(int(Decimal(self.max_abs))).lstrip("-").lstrip("0"))
        except (InvalidOperation, ValueError):
            return MAX_DECIMAL_PRECISION + 1


_NUMERIC_TYPMOD = re.compile(r"^numeric\((\d+)(?:,(-?\d+))?\)$")

# Types the postgres scanner reads into a DuckDB type that lands in Parquet exactly.
_PG_EXACT = {
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "boolean",
    "text",
    "character varying",
    "character",
    "varchar",
    "bpchar",
    "name",
    "citext",
    "date",
    "bytea",
    "uuid",
    '"char"',
}
_PG_EXACT_PREFIX = (
    "character varying(",
    "character(",
    "timestamp",
    "time without time zone",
    "time(",
)
# Array elements whose DuckDB LIST lands exactly (other arrays land as PostgreSQL's array text).
_PG_EXACT_ELEMENTS = {
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "boolean",
    "text",
    "character varying",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "uuid",
}
# Base types a domain's text is cast back to on the DuckDB side (the scanner reads domains as text).
_PG_DOMAIN_BASES = {
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "text": "VARCHAR",
    "character varying": "VARCHAR",
    "double precision": "DOUBLE",
    "real": "FLOAT",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "uuid": "UUID",
}


def pg_numeric_typmod(base: str) -> tuple[int, int] | None:
    m = _NUMERIC_TYPMOD.match(base.replace(" ", ""))
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def pg_needs_probe(col: PgColumn) -> bool:
    return col.base == "numeric" or col.base.startswith("numeric(")


def pg_probe_magnitude(col: PgColumn, cast: str | None) -> bool:
    """Whether the read of this numeric column depends on its values' size and scale, or only on NaN.

    A declared numeric(p,s) with 0 <= s <= p <= 38 lands as DECIMAL(p,s) whatever its values, and cannot hold
    Infinity (PostgreSQL refuses it there), so only its NaN count matters; a `cast:` likewise. Measured on
    lineitem SF1 (four numeric(15,2) columns): the NaN count costs 0.6-0.8 s, size and scale as well 2.2-3.7 s.
    """
    if cast is not None:
        return False
    typmod = pg_numeric_typmod(col.base)
    return not (typmod is not None and 0 <= typmod[1] <= typmod[0] <= MAX_DECIMAL_PRECISION)


# A value a guarded read cannot land exactly makes PostgreSQL stop the read with this word in its error
# (`invalid input syntax for type numeric: "adu_not_exact"`: the quoted value stays as it is in every server
# language); the export then probes the columns and reads again (see `pg_guarded_numeric`).
NOT_EXACT_MARKER = "adu_not_exact"
GUARD_ERRORS = (NOT_EXACT_MARKER,)


def pg_guardable(col: PgColumn) -> bool:
    """A numeric column `pg_guarded_numeric` can read in the same pass that checks it."""
    if not pg_needs_probe(col):
        return False
    typmod = pg_numeric_typmod(col.base)
    return typmod is None or 0 <= typmod[1] <= typmod[0] <= MAX_DECIMAL_PRECISION


def pg_guarded_numeric(col: PgColumn) -> ColumnRead:
    """Read a numeric column as the probe would most often decide, checked row by row in the same query.

    An unconstrained numeric lands as DECIMAL(38, UNCONSTRAINED_MIN_SCALE) when every value has at most that
    scale and fits (the type a probe picks for such values), a numeric(p,s) as DECIMAL(p,s). A NaN, an
    Infinity, a longer scale or a too large value makes PostgreSQL raise (the raising branch depends on the
    row, so the planner cannot fold it in advance): nothing lands, and the export probes and reads again.
    One pass of PostgreSQL instead of two, and the check sees exactly the rows that are read.
    """
    name, q = col.name, quote_ident(col.name)
    fail = f"CAST(left({quote_literal(NOT_EXACT_MARKER)} || {q}::text, {len(NOT_EXACT_MARKER)}) AS numeric)"
    typmod = pg_numeric_typmod(col.base)
    if typmod is None:
        scale = UNCONSTRAINED_MIN_SCALE
        target = f"numeric({MAX_DECIMAL_PRECISION},{scale})"
        # The outer CAST keeps the typmod (a CASE with a NULL branch would give plain numeric, read as DOUBLE).
        # The magnitude is checked as well, so the cast itself never fails with its own (translated) message.
        limit = f"1e{MAX_DECIMAL_PRECISION - scale}"
        expr = (
            f"CAST(CASE WHEN (scale({q}) <= {scale} AND abs({q}) < {limit}) OR {q} IS NULL THEN {q} "
            f"ELSE {fail} END AS {target})"
        )
        note = (
            f"{name}: {col.declared} landed as DECIMAL({MAX_DECIMAL_PRECISION},{scale}), which holds every "
            "value present (checked while reading)"
        )
        return ColumnRead(name, q, source_expr=expr, note=note)
    p, s = typmod
    target = f"numeric({p},{s})"
    # NaN is the one special a numeric(p,s) holds ('NaN' = 'NaN' in PostgreSQL); the scanner would read it as 0.
    expr = f"CAST(CASE WHEN {q} = 'NaN'::numeric THEN {fail} ELSE {q} END AS {target})"
    return ColumnRead(name, q, source_expr=expr)


def pg_read(col: PgColumn, duck_type: str, probe: NumericProbe | None, cast: str | None) -> ColumnRead:
    """The read of one PostgreSQL column through the postgres scanner (`duck_type` is what it reports)."""
    name, q = col.name, quote_ident(col.name)
    if cast is not None:
        target = cast_target(cast)
        if probe is not None and probe.specials and target.startswith("DECIMAL"):
            raise NotExact(
                f"column {name} ({col.declared}) holds NaN or Infinity, which {cast} cannot hold; "
                f"use cast: {{{name}: double}} (keeps NaN) or {{{name}: text}}"
            )
        return ColumnRead(
            name,
            q,
            source_expr=f"CAST({q} AS {_pg_cast_type(target)})",
            note=cast_note(name, col.declared, cast),
        )
    base = col.base
    if pg_needs_probe(col):
        assert probe is not None, "numeric columns are probed first"
        return _pg_numeric(col, probe)
    if col.typtype == "e":
        return duck_cast(name, "VARCHAR", f"{name}: enum {col.declared} landed as text")
    if base == "interval" or base.startswith("interval"):
        return duck_cast(
            name,
            "VARCHAR",
            f"{name}: interval landed as text in DuckDB's interval syntax (CAST({name} AS INTERVAL) "
            "restores it exactly)",
        )
    if base.startswith("time with time zone") or base.startswith("time(") and "with time zone" in base:
        return duck_cast(name, "VARCHAR", f"{name}: {col.declared} landed as text (keeps the UTC offset)")
    if base in ("json", "jsonb"):
        return duck_cast(name, "JSON", f"{name}: {base} landed as JSON text, values intact")
    if col.category == "A":
        element = (col.element or "").lower()
        if element in _PG_EXACT_ELEMENTS or element.startswith("character varying"):
            return plain(name)
        return ColumnRead(
            name,
            q,
            source_expr=f"CAST({q} AS text)",
            note=f"{name}: {col.declared} landed as PostgreSQL's array text",
        )
    if col.typtype == "d":
        domain_base: str | None = _PG_DOMAIN_BASES.get(base)
        if domain_base is None:
            m = pg_numeric_typmod(base)
            domain_base = f"DECIMAL({m[0]},{m[1]})" if m and m[0] <= MAX_DECIMAL_PRECISION else None
        if domain_base is not None:
            if duck_type.upper() == domain_base:
                return plain(name)
            return duck_cast(name, domain_base)
        return ColumnRead(
            name,
            q,
            source_expr=f"CAST({q} AS text)",
            note=f"{name}: domain {col.declared} over {base} landed as text",
        )
    if base in _PG_EXACT or base.startswith(_PG_EXACT_PREFIX):
        return plain(name)
    if duck_type.upper() == "VARCHAR":
        return ColumnRead(name, q, note=f"{name}: {col.declared} read as text")
    return plain(name)


def _pg_numeric(col: PgColumn, probe: NumericProbe) -> ColumnRead:
    name, q = col.name, quote_ident(col.name)
    typmod = pg_numeric_typmod(col.base)
    if probe.specials:
        return ColumnRead(
            name,
            q,
            source_expr=f"CAST({q} AS text)",
            note=f"{name}: {col.declared} holds NaN or Infinity ({probe.specials} values): landed as exact "
            f"text; cast: {{{name}: double}} lands it as DOUBLE with NaN kept",
        )
    if typmod is not None and typmod[0] <= MAX_DECIMAL_PRECISION and 0 <= typmod[1] <= typmod[0]:
        if col.typtype == "d":  # the scanner reads a domain as its text: cast back to the base type
            return duck_cast(name, f"DECIMAL({typmod[0]},{typmod[1]})")
        return plain(name)
    if typmod is not None:
        scale = typmod[1]
    else:
        # The scale found today may grow tomorrow, and a narrower warehouse column would round: take at
        # least UNCONSTRAINED_MIN_SCALE when the values leave room, so the type stays the same run to run.
        found = probe.max_scale or 0
        roomy = max(found, UNCONSTRAINED_MIN_SCALE)
        scale = roomy if probe.integer_digits + roomy <= MAX_DECIMAL_PRECISION else found
    if scale >= 0 and probe.integer_digits + scale <= MAX_DECIMAL_PRECISION:
        target = f"numeric({MAX_DECIMAL_PRECISION},{scale})"
        return ColumnRead(
            name,
            q,
            source_expr=f"CAST({q} AS {target})",
            note=f"{name}: {col.declared} landed as DECIMAL({MAX_DECIMAL_PRECISION},{scale}), which holds "
            "every value present (probed)",
        )
    return ColumnRead(
        name,
        q,
        source_expr=f"CAST({q} AS text)",
        note=f"{name}: {col.declared} has values wider than 38 digits: landed as exact text",
    )


# --- DuckDB -------------------------------------------------------------------------------------

_HUGE = ("HUGEINT", "UHUGEINT")
HUGEINT_LIMIT = 10**MAX_DECIMAL_PRECISION - 1
# Types with no exact Parquet form, also when nested inside a LIST/STRUCT/MAP.
_DUCK_TEXT = ("INTERVAL", "TIME WITH TIME ZONE", "BIGNUM", "VARINT", "BIT", "UNION(")


def duck_read(name: str, duck_type: str, huge_fits: bool | None, cast: str | None) -> ColumnRead:
    """The read of one column of a DuckDB file (`huge_fits`: the probe of a HUGEINT column)."""
    t = duck_type.upper()
    if cast is not None:
        return duck_cast(name, cast_target(cast), cast_note(name, duck_type, cast))
    if t in _HUGE:
        if huge_fits:
            return duck_cast(name, "DECIMAL(38,0)", f"{name}: {t} landed as DECIMAL(38,0) (every value fits)")
        return duck_cast(name, "VARCHAR", f"{name}: {t} has values over 38 digits: landed as exact text")
    if t.startswith("ENUM("):
        return duck_cast(name, "VARCHAR", f"{name}: enum landed as text")
    if t == "TIME WITH TIME ZONE":
        return duck_cast(name, "VARCHAR", f"{name}: TIME WITH TIME ZONE landed as text (keeps the offset)")
    if t == "INTERVAL":
        return duck_cast(
            name,
            "VARCHAR",
            f"{name}: interval landed as text in DuckDB's interval syntax (CAST({name} AS INTERVAL) "
            "restores it exactly)",
        )
    if any(x in t for x in _DUCK_TEXT) or (any(h in t for h in _HUGE) and t not in _HUGE):
        return duck_cast(name, "VARCHAR", f"{name}: {duck_type} landed as DuckDB's text form")
    return plain(name)


# --- SQLite -------------------------------------------------------------------------------------


@dataclass
class SqliteProbe:
    """Storage classes found in a column (`typeof()`), and whether timestamp text carries UTC offsets."""

    kinds: frozenset[str] = frozenset()
    offsets: int = 0
    wide_integers: int = 0  # integers beyond 2**53, which a DOUBLE would round


_SQLITE_REAL_TEXT = "printf('%!.17g', {q})"  # 17 significant digits: a double's exact round trip
_SQLITE_ANY_TEXT = (
    "CASE typeof({q}) WHEN 'real' THEN printf('%!.17g', {q}) WHEN 'blob' THEN hex({q}) "
    "ELSE CAST({q} AS TEXT) END"
)
_SQLITE_MIXED_TEXT = "CASE WHEN typeof({q}) = 'real' THEN printf('%!.17g', {q}) ELSE CAST({q} AS TEXT) END"


def sqlite_source_expr(name: str, duck_type: str) -> str:
    """A column's value as text from `sqlite_query` (which returns text only), so it casts back exactly."""
    q = quote_ident(name)
    t = duck_type.upper()
    if t == "DOUBLE" or t == "FLOAT":
        return f"CASE WHEN typeof({q}) = 'real' THEN {_SQLITE_REAL_TEXT.format(q=q)} ELSE {q} END"
    if t == "BLOB":
        # hex(NULL) is '' in SQLite: keep NULL apart from an empty BLOB.
        return f"CASE WHEN {q} IS NULL THEN NULL ELSE hex({q}) END"
    return q


def sqlite_back(name: str, duck_type: str) -> str:
    """The DuckDB expression turning `sqlite_source_expr`'s text back into the scanner's type."""
    q = quote_ident(name)
    if duck_type.upper() == "BLOB":
        return f"unhex({q}) AS {q}"
    if duck_type.upper() == "VARCHAR":
        return q
    return f"CAST({q} AS {duck_type}) AS {q}"


def sqlite_read(
    name: str, declared: str, duck_type: str, probe: SqliteProbe | None, cast: str | None
) -> ColumnRead:
    """The read of one SQLite column. `source_expr` set means: read through `sqlite_query` as text."""
    q = quote_ident(name)
    if cast is not None:
        target = cast_target(cast)
        return ColumnRead(
            name,
            f"CAST({q} AS {target}) AS {q}",
            # Every storage class as text that casts back exactly: reals with 17 digits, BLOBs as hex.
            source_expr=_SQLITE_ANY_TEXT.format(q=q),
            note=cast_note(name, declared or "untyped", cast)
            + (" (BLOB values as hex)" if target == "VARCHAR" else ""),
        )
    if probe is not None and duck_type.upper() == "TIMESTAMP" and probe.offsets:
        return ColumnRead(
            name,
            f"CAST({q} AS TIMESTAMPTZ) AS {q}",
            source_expr=q,
            note=f"{name}: {declared} text with UTC offsets landed as TIMESTAMPTZ (the instant); values "
            "without an offset are taken as UTC",
        )
    if probe is not None and declared.strip() and duck_type.upper() == "DOUBLE" and probe.wide_integers:
        if probe.kinds - {"null"} == {"integer"}:
            return ColumnRead(
                name,
                f"CAST({q} AS BIGINT) AS {q}",
                source_expr=q,
                note=f"{name}: {declared} holds only integers, some beyond 2^53: landed as BIGINT",
            )
        return ColumnRead(
            name,
            q,
            source_expr=_SQLITE_MIXED_TEXT.format(q=q),
            note=f"{name}: {declared} holds integers beyond 2^53 and other values: landed as text",
        )
    if probe is not None and not declared.strip():
        kinds = probe.kinds - {"null"}
        if "blob" in kinds and len(kinds) > 1:
            raise NotExact(
                f"untyped column {name} holds BLOBs and {', '.join(sorted(kinds - {'blob'}))} values; "
                f"say which with cast: {{{name}: text}}"
            )
        if kinds == {"blob"}:
            return plain(name)
        if kinds == {"integer"}:
            return ColumnRead(name, f"CAST({q} AS BIGINT) AS {q}", source_expr=q)
        if kinds == {"real"}:
            return ColumnRead(name, f"CAST({q} AS DOUBLE) AS {q}", source_expr=_SQLITE_REAL_TEXT.format(q=q))
        if kinds == {"integer", "real"} or kinds - {"text"}:
            return ColumnRead(
                name,
                q,
                source_expr=_SQLITE_MIXED_TEXT.format(q=q),
                note=f"{name}: untyped column holding {', '.join(sorted(kinds))} values landed as text",
            )
        return ColumnRead(name, q, source_expr=q)
    return plain(name)
