"""Load a business's files (CSV, Parquet) or warehouse tables into the ``raw_*`` contract.

Files are read by DuckDB (``read_csv`` with every column as text, so leading
zeros and odd values survive; ``read_parquet``) and streamed in Arrow batches
into the warehouse, one tqdm bar per file. Each ``raw_*`` table is replaced
in one transaction: a failed load leaves the previous table in place.

The loader converts only what the mapping declares (date formats to ISO,
decimal commas to points, local times to UTC) and writes every column as
text. A value it cannot convert is written as it came, so extract
quarantines it (required column) or nulls it into ``field_issues`` (optional
column) with the original value: nothing is dropped here. When most sampled
values of a column fail a declared conversion, the mapping itself is wrong
and loading stops with a :class:`MappingError` naming the file, the column
and an example value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from tqdm import tqdm

from include.erasure import remove_erased_rows
from include.load.mapping import Mapping, MappingError, TableMapping
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Rows per Arrow batch streamed into the warehouse.
BATCH_ROWS = 200_000
#: Rows of each source sampled to check the mapping before loading.
SAMPLE_ROWS = 10_000
#: A declared conversion failing on more than this share of sampled values is a mapping error.
MAX_SAMPLE_FAILURE_SHARE = 0.5

_ISO_OUT = "%Y-%m-%d %H:%M:%S.%f"
_NUMBER_WITH_COMMA = r"[-+]?([0-9]+|[0-9]{1,3}([.][0-9]{3})+)(,[0-9]+)?"
_NUMBER_WITH_THOUSANDS_COMMA = r"[-+]?[0-9]{1,3}(,[0-9]{3})+([.][0-9]+)?"
_LOOKS_PARSABLE_DATE = r"([0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{8}).*"


@dataclass(frozen=True)
class LoadResult:
    table: str
    rows: int
    source: str


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def file_source_sql(mapping: TableMapping, path: Path) -> str:
    """DuckDB table function reading one source file (every CSV column as text)."""
    if mapping.source_format == "parquet":
        return f"read_parquet({quote_literal(str(path))})"
    options = [f"header = {'true' if mapping.header else 'false'}", "all_varchar = true",
               f"encoding = {quote_literal(mapping.encoding)}"]
    if mapping.delimiter is not None:
        options.append(f"delim = {quote_literal(mapping.delimiter)}")
    return f"read_csv({quote_literal(str(path))}, {', '.join(options)})"


def _text(expr: str) -> str:
    return f"NULLIF(TRIM(CAST({expr} AS VARCHAR)), '')"


def column_sql(mapping: TableMapping, target: str, source_type: str) -> str:
    """DuckDB expression turning the source column of ``target`` into contract text.

    ``source_type`` is the DuckDB type of the source column (``VARCHAR`` for CSV).
    """
    src = quote_identifier(mapping.columns[target])
    kind = {c.name: c.kind for c in mapping.spec.columns}.get(target, "ts" if target == "loaded_at" else "text")
    source_type = source_type.upper()
    if kind == "ts" and source_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"strftime(timezone('UTC', {src}), '{_ISO_OUT}')"
    if kind in ("ts", "date") and source_type.startswith(("TIMESTAMP", "DATE")):
        parsed = f"CAST({src} AS TIMESTAMP)"
        if kind == "date":
            return f"strftime({parsed}, '%Y-%m-%d')"
        return f"strftime({_to_utc(parsed, mapping.timezone)}, '{_ISO_OUT}')"
    value = _text(src)
    if kind in ("ts", "date") and source_type == "VARCHAR":
        fmt = mapping.date_formats.get(target)
        if fmt is not None and "%z" in fmt.lower():
            parsed = f"timezone('UTC', try_strptime({value}, {quote_literal(fmt)}))"
        elif fmt is not None:
            parsed = f"try_strptime({value}, {quote_literal(fmt)})"
            # A date without a time of day stays that calendar date: moving
            # midnight to UTC would put it on the day before.
            if kind == "ts" and _has_time_of_day(fmt):
                parsed = _to_utc(parsed, mapping.timezone)
        elif kind == "ts" and _converts_zone(mapping.timezone):
            # Text with its own offset is left for extract, which honours it.
            parsed = _to_utc(
                f"CASE WHEN LENGTH({value}) > 10 AND NOT regexp_matches({value}, '(Z|[+-][0-9]{{2}}:?[0-9]{{2}})$') "
                f"THEN TRY_CAST({value} AS TIMESTAMP) END", mapping.timezone)
        else:
            return value
        out = "%Y-%m-%d" if kind == "date" else _ISO_OUT
        return f"COALESCE(strftime({parsed}, '{out}'), {value})"
    if kind == "num" and source_type == "VARCHAR":
        if mapping.decimal == ",":
            return (f"CASE WHEN regexp_full_match({value}, '{_NUMBER_WITH_COMMA}') "
                    f"THEN REPLACE(REPLACE({value}, '.', ''), ',', '.') ELSE {value} END")
        return (f"CASE WHEN regexp_full_match({value}, '{_NUMBER_WITH_THOUSANDS_COMMA}') "
                f"THEN REPLACE({value}, ',', '') ELSE {value} END")
    return value


def _has_time_of_day(fmt: str) -> bool:
    return any(code in fmt for code in ("%H", "%I", "%M", "%S", "%T", "%X", "%c", "%R"))


def _converts_zone(timezone: str | None) -> bool:
    return timezone is not None and timezone.upper() not in ("UTC", "ETC/UTC", "Z")


def _to_utc(timestamp: str, timezone: str | None) -> str:
    if not _converts_zone(timezone):
        return timestamp
    return f"timezone('UTC', timezone({quote_literal(timezone)}, {timestamp}))"


def select_sql(mapping: TableMapping, source: str, source_types: dict[str, str]) -> str:
    """The SELECT that turns ``source`` into the ``raw_*`` table's text columns."""
    exprs = [f"{column_sql(mapping, target, source_types[src])} AS {target}"
             for target, src in mapping.columns.items()]
    exprs += [f"{quote_literal(value)} AS {target}" for target, value in mapping.constants.items()]
    return f"SELECT {', '.join(exprs)} FROM {source} src"


def _describe(con: duckdb.DuckDBPyConnection, source: str, label: str, mapping: TableMapping) -> dict[str, str]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except duckdb.Error as exc:
        raise MappingError(f"{label}: cannot be read as {mapping.source_format} for {mapping.table}: {exc}") from exc
    types = {name: str(kind) for name, kind, *_ in rows}
    missing = [(target, src) for target, src in mapping.columns.items() if src not in types]
    if missing:
        have = ", ".join(types)
        hint = ""
        if len(types) == 1 and mapping.source_format == "csv":
            hint = (f" (one column only: is the delimiter right? the mapping says "
                    f"{mapping.delimiter!r}; None = detected)")
        listed = ", ".join(f"'{src}' (for {target})" for target, src in missing)
        raise MappingError(f"{label}: column(s) {listed} not found; the source has: {have}{hint}")
    return types


def check_sample(con: duckdb.DuckDBPyConnection, mapping: TableMapping, source: str, label: str,
                 source_types: dict[str, str]) -> list[str]:
    """Check the declared conversions on the first rows of a source; return warnings.

    Raises
    ------
    MappingError
        More than :data:`MAX_SAMPLE_FAILURE_SHARE` of a column's sampled
        values fail its date format or decimal separator: the message names
        the file, the column and an example value.
    """
    kinds = {c.name: c.kind for c in mapping.spec.columns} | {"loaded_at": "ts"}
    checks = []
    for target, src in mapping.columns.items():
        if source_types[src] != "VARCHAR" or kinds.get(target) not in ("ts", "date", "num"):
            continue
        value = _text(quote_identifier(src))
        fmt = mapping.date_formats.get(target)
        if kinds[target] == "num":
            ok = f"TRY_CAST({column_sql(mapping, target, 'VARCHAR')} AS DOUBLE) IS NOT NULL"
            what = f"numbers with decimal separator {mapping.decimal!r}"
            fatal = True
        elif fmt is not None:
            ok = f"try_strptime({value}, {quote_literal(fmt)}) IS NOT NULL"
            what = f"dates in date_format {fmt!r}"
            fatal = True
        else:
            ok = f"regexp_full_match({value}, '{_LOOKS_PARSABLE_DATE}')"
            what = "ISO or YYYYMMDD dates (no date_format given)"
            fatal = False
        checks.append((target, src, what, fatal,
                       f"COUNT({value}), SUM(CASE WHEN {value} IS NOT NULL AND NOT ({ok}) THEN 1 ELSE 0 END), "
                       f"MIN(CASE WHEN {value} IS NOT NULL AND NOT ({ok}) THEN {value} END)"))
    if not checks:
        return []
    sql = f"SELECT {', '.join(c[4] for c in checks)} FROM (SELECT * FROM {source} LIMIT {SAMPLE_ROWS}) src"
    try:
        values = con.execute(sql).fetchall()[0]
    except duckdb.Error as exc:
        raise MappingError(f"{label}: reading the first {SAMPLE_ROWS} rows failed: {exc}") from exc
    warnings = []
    for i, (target, src, what, fatal, _) in enumerate(checks):
        seen, failed, example = values[3 * i], values[3 * i + 1] or 0, values[3 * i + 2]
        if seen and failed > MAX_SAMPLE_FAILURE_SHARE * seen:
            message = (f"{label}: column '{src}' (mapped to {mapping.table}.{target}): {failed} of {seen} sampled "
                       f"values are not {what}, e.g. {example!r}")
            if fatal:
                raise MappingError(message)
            warnings.append(message + "; set date_format in the mapping, or the pipeline's date_order")
    return warnings


def _read_batches(con: duckdb.DuckDBPyConnection, sql: str, label: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from con.sql(sql).to_arrow_reader(BATCH_ROWS)
    except (duckdb.Error, pa.ArrowException) as exc:
        raise MappingError(f"{label}: reading failed: {exc}") from exc


def _estimated_rows(con: duckdb.DuckDBPyConnection, mapping: TableMapping, path: Path) -> int | None:
    if mapping.source_format == "parquet":
        return int(con.execute(f"SELECT COUNT(*) FROM {file_source_sql(mapping, path)}").fetchall()[0][0])
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    lines = head.count(b"\n")
    if not lines:
        return None
    return max(1, round(size * lines / len(head)) - (1 if mapping.header else 0))


class _TableWriter:
    """Replaces one ``raw_*`` table with text columns inside an open transaction."""

    def __init__(self, wh: Warehouse, conn: sa.Connection, table: str, columns: list[str]) -> None:
        self.wh, self.conn, self.table, self.columns = wh, conn, table, columns
        ddl = f"CREATE OR REPLACE TABLE {table} ({', '.join(f'{c} VARCHAR' for c in columns)})"
        if wh.dialect == "duckdb":
            self.raw = conn.connection.driver_connection
            self.raw.execute(ddl)
        else:
            conn.execute(sa.text(ddl))

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.wh.dialect == "duckdb":
            self.raw.register("_load_batch", pa.Table.from_batches([batch]))
            try:
                self.raw.execute(f"INSERT INTO {self.table} SELECT * FROM _load_batch")
            finally:
                self.raw.unregister("_load_batch")
        else:
            self.wh.insert_df(self.table, batch.to_pandas(), self.conn)


def load_table(wh: Warehouse, mapping: TableMapping, *, progress: bool = True) -> LoadResult:
    """Replace ``mapping.table`` in the warehouse with its mapped source."""
    columns = list(mapping.columns) + list(mapping.constants)
    if mapping.source_format == "warehouse":
        return _load_from_warehouse(wh, mapping, columns)
    rows = 0
    con = duckdb.connect()
    try:
        with wh.begin() as conn:
            writer = _TableWriter(wh, conn, mapping.table, columns)
            for path in mapping.files:
                source = file_source_sql(mapping, path)
                label = f"{path.name} ({mapping.table})"
                types = _describe(con, source, label, mapping)
                for warning in check_sample(con, mapping, source, label, types):
                    log.warning("%s", warning)
                    if progress:
                        tqdm.write(f"warning: {warning}")
                total = _estimated_rows(con, mapping, path)
                with tqdm(total=total, desc=f"{mapping.table} <- {path.name}", unit="row", unit_scale=True,
                          disable=not progress, leave=True) as bar:
                    for batch in _read_batches(con, select_sql(mapping, source, types), label):
                        writer.write(batch)
                        rows += batch.num_rows
                        bar.update(batch.num_rows)
                    if bar.total is not None and bar.n != bar.total:
                        bar.total = bar.n  # the CSV row count was an estimate
                        bar.refresh()
    finally:
        con.close()
    return LoadResult(mapping.table, rows, mapping.source_label)


def _load_from_warehouse(wh: Warehouse, mapping: TableMapping, columns: list[str]) -> LoadResult:
    source = f"({mapping.query})"
    label = f"query for {mapping.table}"
    if wh.dialect != "duckdb":
        converts = mapping.date_formats or mapping.decimal != "." or _converts_zone(mapping.timezone)
        if converts:
            raise MappingError(
                f"{label}: date_format, decimal and timezone are applied by DuckDB; on {wh.dialect} "
                "convert in the query instead (TO_TIMESTAMP, REPLACE...) and map its result")
        exprs = [f"CAST({quote_identifier(src)} AS VARCHAR) AS {target}" for target, src in mapping.columns.items()]
        exprs += [f"{quote_literal(value)} AS {target}" for target, value in mapping.constants.items()]
        with wh.begin() as conn:
            conn.execute(sa.text(f"CREATE OR REPLACE TABLE {mapping.table} AS "
                                 f"SELECT {', '.join(exprs)} FROM {source} src"))
    else:
        with wh.begin() as conn:
            raw = conn.connection.driver_connection
            types = _describe(raw, source, label, mapping)
            for warning in check_sample(raw, mapping, source, label, types):
                log.warning("%s", warning)
            select = select_sql(mapping, source, types)
            raw.execute(f"CREATE OR REPLACE TABLE {mapping.table} AS "
                        f"SELECT {', '.join(f'CAST({c} AS VARCHAR) AS {c}' for c in columns)} FROM ({select}) m")
    rows = int(wh.scalar(f"SELECT COUNT(*) FROM {mapping.table}"))
    return LoadResult(mapping.table, rows, mapping.source_label)


def load_mapping(mapping: Mapping, warehouse_url: str, *, progress: bool = True,
                 tables: list[str] | None = None) -> list[LoadResult]:
    """Load every table of ``mapping`` (or only ``tables``) and record it in ``load_manifest``.

    Every table's sources are checked (columns, sampled conversions) before
    its rows are written; tables load one after the other, each atomically.
    """
    selected = [t for t in mapping.tables if tables is None or t.table in tables]
    if tables is not None:
        unknown = set(tables) - {t.table for t in mapping.tables}
        if unknown:
            raise MappingError(f"{mapping.path.name}: no mapping for {', '.join(sorted(unknown))}")
    results = []
    with Warehouse(warehouse_url) as wh:
        wh.ensure_schema()
        for table_mapping in selected:
            result = load_table(wh, table_mapping, progress=progress)
            # An erased person never comes back from a file loaded again (include.erasure).
            erased = sum(remove_erased_rows(wh, [result.table]).values())
            if erased:
                result = dataclasses.replace(result, rows=result.rows - erased)
            manifest = pd.DataFrame([{
                "table_name": result.table, "source": result.source, "rows_loaded": result.rows,
                "currency": table_mapping.currency, "timezone": table_mapping.timezone,
                "date_format": ", ".join(f"{c}={f}" for c, f in table_mapping.date_formats.items()) or None,
                "decimal_separator": table_mapping.decimal, "mapping_file": str(mapping.path),
                "loaded_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            }])
            wh.replace_partition("load_manifest", manifest, {"table_name": result.table})
            log.info("loaded %s: %d rows from %s", result.table, result.rows, result.source)
            results.append(result)
    return results
