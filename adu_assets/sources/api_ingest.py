"""One pass from API pages to mapped rows: fetch, land the raw records, decode only the mapped paths, map.

`fetch_to_parquet` followed by `load_records` + `apply_mappings` parses every record twice, and the second
parse (all fields of all records, after the last page arrived) cost as much as the whole fetch. `ingest`
instead hands each page's raw records to one background thread while the next pages are still on the
network. That thread parses batches of records with pyarrow's JSON reader under an explicit schema that
holds only the mapping source paths, and maps each batch with `apply_mappings`. pyarrow and polars release
the GIL, so the work overlaps with the fetch threads' waiting; after the last page only one batch is left.

Exactness: the rows must be what `apply_mappings(load_records(files), mappings)` would give, and that
infers one type per field over *all* records. So:

- Each path's type is learned from the data (msgspec, on the first batch and whenever a batch does not fit)
  and only widens along polars' own rules: null -> anything, int -> float, list[null] -> list[x],
  list[int] -> list[float]. Any other mix (an int beside a string, an object where a value was, duplicate
  keys, a non-object record, a key with a dot in it) stops the fast path, and the run falls back to the
  two-step path over the landed files: slower, never different.
- pyarrow with an explicit schema is strict (a string where int64 is declared is an error, never a
  coercion; ISO timestamps stay text), so a batch either parses exactly or tells us to learn again.
- A batch mapped before a path's type widened, or before a path was first seen, is mapped again at the end
  from the landed raw Parquet with the final types. That is rare (a field null in the first batches) and
  keeps memory to one batch of raw records plus the mapped rows.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adu_assets.sources.http import RequestConfig, fetch_to_parquet
from adu_assets.sources.mapping import (
    PAGE,
    RECORD_INDEX,
    SCALAR_COLUMN,
    MappingConfig,
    MappingResult,
    apply_mappings,
    flatten_structs,
    load_records,
)

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = ["IngestResult", "ingest"]

# A batch big enough that polars' per-call overhead is small, small enough that the batch still to map
# after the last page (the only part not hidden behind the network) is short.
DEFAULT_BATCH_RECORDS = 10_000
_BATCH_BYTES = 32 << 20
# Batches queued for the mapping thread; the fetch waits beyond that, so memory stays bounded.
_MAX_PENDING = 2

_LEARN_SAMPLE = 1_000
_SCALARS = {"null", "int", "float", "str", "bool"}


@dataclass
class IngestResult:
    raw_files: list[Path]
    rows: pl.DataFrame
    errors: pl.DataFrame
    missing_sources: list[str]
    records: int
    pages: int
    requests: int
    retries: int
    seconds: float
    fetch_seconds: float
    # None when the records were decoded and mapped during the fetch; otherwise why the run used the
    # two-step path over the landed files (for the log and metadata, not an error).
    fallback_reason: str | None = None


class _Unsupported(Exception):
    """The data or the mappings are outside what the narrow decode reproduces exactly."""


# --- the type lattice ------------------------------------------------------------------------------
# Types are small strings: "null", "int", "float", "str", "bool", or "list[<scalar>]".


def _join(a: str, b: str) -> str | None:
    """The type polars infers for a field holding values of both types, or None if we do not follow."""
    if a == b:
        return a
    if a == "null":
        return b
    if b == "null":
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    if a.startswith("list[") and b.startswith("list["):
        inner = _join(a[5:-1], b[5:-1])
        return f"list[{inner}]" if inner in _SCALARS else None
    return None


def _kind(types: set[type]) -> str | None:
    types = types - {type(None)}
    if not types:
        return "null"
    if types == {int}:
        return "int"
    if types <= {int, float}:
        return "float"
    if types == {str}:
        return "str"
    if types == {bool}:
        return "bool"
    return None


def _arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    if kind.startswith("list["):
        return pa.list_(_arrow_type(kind[5:-1]))
    return {
        "null": pa.null(),
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "bool": pa.bool_(),
    }[kind]


# --- the narrow decoder ------------------------------------------------------------------------------

_Tree = dict[str, "_Tree | None"]  # None marks a leaf


class _NarrowDecoder:
    """Decodes batches of raw records into a flat frame of the mapping source paths only."""

    def __init__(self, mappings: Sequence[MappingConfig]) -> None:
        import msgspec

        self.leaves = list(dict.fromkeys(m.source for m in mappings))
        self.types = dict.fromkeys(self.leaves, "null")
        # A path is a column of `load_records` only once some record holds its key (even as null).
        self.proven: set[str] = set()
        self.learned = False
        self.tree: _Tree = {}
        for leaf in self.leaves:
            if leaf in (PAGE, RECORD_INDEX, SCALAR_COLUMN):
                raise _Unsupported(f"mapping source {leaf} names a column load_records adds itself")
            parts = leaf.split(".")
            if not all(parts):
                raise _Unsupported(f"mapping source {leaf!r} has an empty path segment")
            node = self.tree
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if part in node and (node[part] is None) != last:
                    raise _Unsupported(
                        f"mapping source {leaf} is both a value and a parent of another source"
                    )
                if last:
                    node[part] = None
                else:
                    child = node.setdefault(part, {})
                    assert child is not None
                    node = child
        # load_records names a column "a.b" for {"a": {"b": ..}} and for {"a.b": ..} alike; a key with a dot
        # on a mapped path is rare enough to send to the two-step path rather than to reproduce.
        needles: set[bytes] = set()
        for leaf in self.leaves:
            parts = leaf.split(".")
            for i in range(len(parts)):
                for j in range(i + 2, len(parts) + 1):
                    needles.add(msgspec.json.encode(".".join(parts[i:j])))
        if needles:
            needles |= {b"\\u002e", b"\\u002E"}  # a dot hidden in an escape
        self.needles = sorted(needles)
        self.key_needles = {leaf: msgspec.json.encode(leaf.split(".")[-1]) for leaf in self.leaves}
        self.attrs: dict[str, list[str]] = {}
        self.struct = self._struct(self.tree, ())
        self.msgspec_decoder = msgspec.json.Decoder(list[self.struct])  # type: ignore[name-defined]

    def _struct(self, node: _Tree, prefix: tuple[str, ...]) -> Any:
        import msgspec

        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for i, (key, sub) in enumerate(node.items()):
            name = f"f{i}"
            rename[name] = key
            path = ".".join((*prefix, key))
            self.attrs[path] = [*self.attrs[".".join(prefix)], name] if prefix else [name]
            typ: Any = object if sub is None else self._struct(sub, (*prefix, key)) | None
            fields.append((name, typ, msgspec.UNSET))
        # No reference cycles can come out of JSON, so the structs need not be tracked by the GC, which
        # otherwise runs collections over every batch's hundreds of thousands of new objects.
        return msgspec.defstruct("NarrowRecord", fields, rename=rename, gc=False)

    def signature(self) -> tuple[tuple[str, str], ...]:
        return tuple((leaf, self.types[leaf]) for leaf in self.leaves if leaf in self.proven)

    def _learn(self, raws: list[bytes]) -> None:
        """Types and presence of every path in this batch, from msgspec: the slow, thorough look."""
        import msgspec

        try:
            records = self.msgspec_decoder.decode(b"[" + b",".join(raws) + b"]")
        except msgspec.DecodeError as exc:
            # ValidationError included: a record, or a parent of a mapped path, that is not an object.
            raise _Unsupported(f"msgspec cannot decode the mapped paths ({exc})") from None
        for leaf in self.leaves:
            values: list[Any] = records
            for attr in self.attrs[leaf]:
                values = [getattr(v, attr, msgspec.UNSET) for v in values]
            types = set(map(type, values))
            if types - {type(msgspec.UNSET)}:
                self.proven.add(leaf)
            types.discard(type(msgspec.UNSET))
            kind = _kind(types)
            if kind is None and types - {type(None)} == {list}:
                inner = _kind(set(map(type, chain.from_iterable(v for v in values if type(v) is list))))
                kind = f"list[{inner}]" if inner is not None else None
            if kind is None and list in types:
                raise _Unsupported(f"mapped path {leaf} holds a list of objects, lists or mixed values")
            joined = _join(self.types[leaf], kind) if kind is not None else None
            if joined is None:
                shown = sorted(t.__name__ for t in types)
                raise _Unsupported(
                    f"mapped path {leaf} holds {', '.join(shown)} beside {self.types[leaf]}; "
                    "decoding all fields to let polars choose one type"
                )
            self.types[leaf] = joined
        self.learned = True

    def _arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        def fields(node: _Tree, prefix: str) -> list[pa.Field]:
            out = []
            for key, sub in node.items():
                path = f"{prefix}{key}"
                typ = _arrow_type(self.types[path]) if sub is None else pa.struct(fields(sub, path + "."))
                out.append(pa.field(key, typ))
            return out

        return pa.schema(fields(self.tree, ""))

    def parse(self, text: bytes) -> pl.DataFrame:
        """The batch under the current types: strict, so a value that does not fit raises ArrowInvalid."""
        import polars as pl
        import pyarrow as pa
        import pyarrow.json as pj

        table = pj.read_json(
            pa.py_buffer(text),
            # One block: a record longer than a block would be an error, and one thread is enough here.
            read_options=pj.ReadOptions(use_threads=False, block_size=len(text) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=self._arrow_schema(), unexpected_field_behavior="ignore"
            ),
        )
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return flatten_structs(frame)

    def decode(self, raws: list[bytes]) -> pl.DataFrame:
        """The batch's proven source columns (dot-path names), typed as far as the data seen so far goes."""
        import polars as pl
        import pyarrow as pa

        if not self.leaves:
            return pl.DataFrame()
        text = b"\n".join(raws)
        for needle in self.needles:
            if needle in text:
                raise _Unsupported(
                    f"a record holds the key {needle.decode(errors='replace')} with a dot in it"
                )
        learned_here = False
        if not self.learned:
            # msgspec builds Python objects while holding the GIL, which the fetch threads need: learn from
            # a sample, and from the whole batch only if pyarrow then finds a value the sample did not show.
            self._learn(raws[:_LEARN_SAMPLE])
            learned_here = len(raws) <= _LEARN_SAMPLE
        try:
            flat = self.parse(text)
        except pa.ArrowInvalid:
            if learned_here:
                raise
            self._learn(raws)
            learned_here = True
            flat = self.parse(text)
        unproven = [leaf for leaf in self.leaves if leaf not in self.proven]
        for leaf in unproven:
            if flat.get_column(leaf).null_count() < flat.height:
                self.proven.add(leaf)
        # All null here: only msgspec tells a key holding null from a key that is absent. The byte search
        # keeps that look to batches that may hold the key at all.
        if not learned_here and any(
            leaf not in self.proven and self.key_needles[leaf] in text for leaf in unproven
        ):
            before = dict(self.types)
            self._learn(raws)
            if self.types != before:
                flat = self.parse(text)
        return flat.select([leaf for leaf in self.leaves if leaf in self.proven])


# --- batches ------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    first: int
    count: int
    signature: tuple[tuple[str, str], ...]
    # None when the mappings raised on this batch's types: mapped again with the final types at the end.
    mapped: MappingResult | None


def _map_frame(
    frame: pl.DataFrame, first: int, count: int, mappings: Sequence[MappingConfig]
) -> MappingResult:
    import polars as pl

    index = pl.int_range(first, first + count, dtype=pl.Int64, eager=True).alias(RECORD_INDEX)
    return apply_mappings(index.to_frame().hstack(frame), mappings)


class _Mapper:
    """Collects pages into batches on the fetch thread and decodes + maps them on one worker thread."""

    def __init__(self, mappings: Sequence[MappingConfig], batch_records: int, log: logging.Logger) -> None:
        self.mappings = list(mappings)
        self.batch_records = batch_records
        self.log = log
        self.fallback: str | None = None
        self.decoder: _NarrowDecoder | None = None
        try:
            self.decoder = _NarrowDecoder(mappings)
        except _Unsupported as exc:
            self.fallback = str(exc)
        self.batches: list[_Batch] = []
        self._raws: list[bytes] = []
        self._first = 0
        self._bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[_Batch | None]] = deque()

    def add(self, first: int, records: list[bytes]) -> None:
        if self.fallback is not None:
            return
        if not self._raws:
            self._first = first
        self._raws.extend(records)
        self._bytes += sum(map(len, records))
        if len(self._raws) >= self.batch_records or self._bytes >= _BATCH_BYTES:
            self._submit()

    def _submit(self) -> None:
        if not self._raws:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adu-map")
        raws, first = self._raws, self._first
        self._raws, self._bytes = [], 0
        self._pending.append(self._pool.submit(self._work, first, raws))
        while len(self._pending) > _MAX_PENDING:
            self._collect(self._pending.popleft())

    def _collect(self, future: Future[_Batch | None]) -> None:
        batch = future.result()
        if batch is not None:
            self.batches.append(batch)

    def _work(self, first: int, raws: list[bytes]) -> _Batch | None:
        if self.fallback is not None or self.decoder is None:
            return None
        try:
            frame = self.decoder.decode(raws)
        except Exception as exc:  # noqa: BLE001 - any surprise here is answered by the exact two-step path
            self._give_up(exc)
            return None
        try:
            mapped: MappingResult | None = _map_frame(frame, first, len(raws), self.mappings)
        except Exception:  # noqa: BLE001
            # A MappingError may come from this batch's narrower types only: the batch is mapped again
            # with the final types at the end, where a real error surfaces as it would in the two-step path.
            mapped = None
        return _Batch(first, len(raws), self.decoder.signature(), mapped)

    def _give_up(self, exc: Exception) -> None:
        import pyarrow as pa

        if isinstance(exc, _Unsupported):
            self.fallback = str(exc)
        elif isinstance(exc, pa.ArrowInvalid):
            self.fallback = f"pyarrow could not read a batch with the learned types ({exc})"
        else:
            self.fallback = f"narrow decode failed unexpectedly: {type(exc).__name__}: {exc}"
            self.log.warning("%s; mapping from the landed raw files instead", self.fallback)

    def finish(self) -> None:
        if self.fallback is None:
            self._submit()
        try:
            while self._pending:
                self._collect(self._pending.popleft())
        finally:
            self.close()

    def close(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def result(self, raw_files: list[Path]) -> MappingResult:
        import polars as pl
        import pyarrow as pa

        if self.fallback is not None or self.decoder is None or not self.batches:
            return apply_mappings(load_records(raw_files), self.mappings)
        final = self.decoder.signature()
        results: list[MappingResult] = []
        for batch in self.batches:
            if batch.mapped is not None and batch.signature == final:
                results.append(batch.mapped)
                continue
            # Mapped under narrower types (or the mappings raised there): read the batch back from the
            # landed raw records and map it as the whole run's types say.
            raw = (
                pl.scan_parquet([str(p) for p in raw_files])
                .filter(pl.col(RECORD_INDEX).is_between(batch.first, batch.first + batch.count - 1))
                .select(pl.col("_raw").str.join("\n"))
                .collect()
                .item()
            )
            try:
                frame = self.decoder.parse(raw.encode()).select([k for k, _ in final])
            except pa.ArrowInvalid as exc:
                self.log.warning("re-reading a batch failed (%s); mapping from the landed raw files", exc)
                return apply_mappings(load_records(raw_files), self.mappings)
            results.append(_map_frame(frame, batch.first, batch.count, self.mappings))
        return MappingResult(
            rows=pl.concat([r.rows for r in results], how="vertical"),
            errors=pl.concat([r.errors for r in results], how="vertical"),
            missing_sources=results[0].missing_sources,
        )


# --- the entry point --------------------------------------------------------------------------------------


def ingest(
    request: RequestConfig,
    variables: dict[str, str],
    out_dir: Path,
    mappings: Sequence[MappingConfig],
    *,
    log: logging.Logger | None = None,
    log_every_pages: int = 50,
    batch_records: int = DEFAULT_BATCH_RECORDS,
) -> IngestResult:
    """Fetch every page of `request`, land the raw records under `out_dir` and map them with `mappings`.

    The result equals `fetch_to_parquet` followed by `apply_mappings(load_records(...), mappings)` (same
    raw files, rows, errors and missing sources, same exceptions), but the decoding and mapping run while
    the fetch waits on the network.
    """
    log = log or logging.getLogger(__name__)
    started = time.perf_counter()
    mapper = _Mapper(mappings, batch_records, log)
    try:
        fetched = fetch_to_parquet(
            request, variables, out_dir, log=log, log_every_pages=log_every_pages, on_records=mapper.add
        )
        mapper.finish()
    finally:
        mapper.close()
    if mapper.fallback is not None:
        log.info("mapping from the landed raw files: %s", mapper.fallback)
    mapped = mapper.result(fetched.raw_files)
    return IngestResult(
        raw_files=fetched.raw_files,
        rows=mapped.rows,
        errors=mapped.errors,
        missing_sources=mapped.missing_sources,
        records=fetched.records,
        pages=fetched.pages,
        requests=fetched.requests,
        retries=fetched.retries,
        seconds=time.perf_counter() - started,
        fetch_seconds=fetched.seconds,
        fallback_reason=mapper.fallback,
    )
