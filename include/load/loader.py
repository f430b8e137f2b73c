"""Load a business's files (CSV, Parquet, whitespace, fixed width) or queries into the ``raw_*`` contract.

Sources are read by DuckDB (``read_csv`` with every column as text, so
leading zeros and odd values survive; ``read_parquet``; whitespace and
fixed-width files line by line, split in SQL) and streamed in Arrow batches
into the warehouse, one tqdm bar per file. Each ``raw_*`` table is replaced
in one transaction: a failed load leaves the previous table in place.

The loader converts only what the mapping declares (date formats to ISO,
decimal commas to points, local times to UTC, column expressions) and writes
every column as text. A value it cannot convert is written as it came, so
extract quarantines it (required column) or nulls it into ``field_issues``
(optional column) with the original value: nothing is dropped here. When
most sampled values of a column fail a declared conversion, the mapping
itself is wrong and loading stops with a :class:`MappingError` naming the
file, the column and an example value.

Every input row is accounted for (``load_manifest`` and the command's
printout): ``rows_in = rows_loaded + rows_as_returns + rows_aggregated +
rows_quarantined + rows_guest + rows_erased``. Aggregated rows are invoice lines folded into their order
(``group_lines_by``) or order rows folded into a derived customer record;
quarantined rows are lines set aside here with a reason (``load_quarantine``:
a line value that is not a number, a line without an order key); guest rows
are orders without a customer, counted with their amount; erased rows are
people erased before (removed after loading, when erasure is in place).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from tqdm import tqdm

from include.erasure import remove_erased_rows
from include.load.mapping import (
    GUEST_TABLES,
    ColumnExpr,
    Condition,
    Mapping,
    MappingError,
    SourceMapping,
    TableMapping,
)
from include.runtime.settings import BY_NAME
from include.runtime.threads import duckdb_config
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Rows per Arrow batch streamed into the warehouse.
BATCH_ROWS = 200_000
#: Rows of each source sampled to check the mapping before loading.
SAMPLE_ROWS = 10_000
#: A declared conversion failing on more than this share of sampled values is a mapping error.
MAX_SAMPLE_FAILURE_SHARE = 0.5
#: Decimals kept of a computed amount (a product, a sum of line values).
AMOUNT_DECIMALS = 6
#: Largest line value summed into an order (DECIMAL(38, 6) holds 32 digits before the point).
MAX_LINE_VALUE = 1e30

_ISO_OUT = "%Y-%m-%d %H:%M:%S.%f"
_NUMBER_WITH_COMMA = r"[-+]?([0-9]+|[0-9]{1,3}([.][0-9]{3})+)(,[0-9]+)?"
_NUMBER_WITH_THOUSANDS_COMMA = r"[-+]?[0-9]{1,3}(,[0-9]{3})+([.][0-9]+)?"
_LOOKS_PARSABLE_DATE = r"([0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{8}).*"
#: A byte no text file uses: whitespace and fixed-width files are read one line per row with it as delimiter.
_LINE_DELIMITER = "\\x1e"


@dataclass
class LoadResult:
    """What one ``raw_*`` table received, and where every input row went.

    ``rows_in = rows + rows_as_returns + rows_aggregated + rows_quarantined + rows_guest + rows_erased``
    (:attr:`balanced`).
    """

    table: str
    rows: int
    source: str
    rows_in: int = 0
    rows_aggregated: int = 0
    rows_quarantined: int = 0
    rows_guest: int = 0
    guest_amount: float | None = None
    derived_from: str | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    #: Rows (cancellation orders of grouped lines) written to ``raw_returns`` instead of this table.
    rows_as_returns: int = 0
    #: Rows of erased persons removed after loading (a load never brings an erased person back).
    rows_erased: int = 0

    @property
    def balanced(self) -> bool:
        return self.rows_in == (self.rows + self.rows_as_returns + self.rows_aggregated + self.rows_quarantined
                                + self.rows_guest + self.rows_erased)

    def summary(self) -> str:
        """One line for the command's printout."""
        parts = [f"{self.rows_in:,} in", f"{self.rows:,} loaded"]
        if self.rows_as_returns:
            parts.append(f"{self.rows_as_returns:,} as returns (raw_returns)")
        if self.rows_aggregated:
            parts.append(f"{self.rows_aggregated:,} aggregated")
        if self.rows_quarantined:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.quarantine_reasons.items()))
            parts.append(f"{self.rows_quarantined:,} quarantined ({reasons})")
        if self.rows_erased:
            parts.append(f"{self.rows_erased:,} erased")
        if self.rows_guest:
            money = "" if self.guest_amount is None else f", amount {self.guest_amount:,.2f} not attributed"
            parts.append(f"{self.rows_guest:,} guest rows{money}")
        check = "" if self.balanced else "  UNBALANCED"
        return " = ".join([parts[0], " + ".join(parts[1:])]) + check


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- sources -------------------------------------------------------------------------------------

def _first_line(path: Path, encoding: str) -> str:
    with path.open("r", encoding=encoding, errors="replace", newline="") as handle:
        return handle.readline().rstrip("\r\n")


def _line_reader(part: SourceMapping, path: Path) -> str:
    skip = 1 if part.header else 0
    return (f"read_csv({quote_literal(str(path))}, delim = '{_LINE_DELIMITER}', quote = '', escape = '', "
            f"header = false, skip = {skip}, columns = {{'line': 'VARCHAR'}}, "
            f"encoding = {quote_literal(part.encoding)}, strict_mode = false)")


def file_source_sql(part: SourceMapping, path: Path) -> str:
    """DuckDB relation reading one source file (every text column as text, named as the mapping names them)."""
    if part.source_format == "parquet":
        return f"read_parquet({quote_literal(str(path))})"
    if part.source_format == "whitespace":
        names = part.names or tuple(_first_line(path, part.encoding).split())
        fields = ", ".join(f"_f[{i + 1}] AS {quote_identifier(n)}" for i, n in enumerate(names))
        return (f"(SELECT {fields} FROM (SELECT string_split_regex(trim(line), '\\s+') AS _f "
                f"FROM {_line_reader(part, path)} WHERE trim(line) <> ''))")
    if part.source_format == "fixed":
        fields, start = [], 1
        for name, width in zip(part.names, part.widths, strict=True):
            fields.append(f"NULLIF(trim(substr(line, {start}, {width})), '') AS {quote_identifier(name)}")
            start += width
        return f"(SELECT {', '.join(fields)} FROM {_line_reader(part, path)} WHERE trim(line) <> '')"
    options = [f"header = {'true' if part.header else 'false'}", "all_varchar = true",
               f"encoding = {quote_literal(part.encoding)}"]
    if part.delimiter is not None:
        options.append(f"delim = {quote_literal(part.delimiter)}")
    return f"read_csv({quote_literal(str(path))}, {', '.join(options)})"


# -- expressions ---------------------------------------------------------------------------------

def _text(expr: str) -> str:
    return f"NULLIF(TRIM(CAST({expr} AS VARCHAR)), '')"


def _kind(table_part: SourceMapping, target: str) -> str:
    return {c.name: c.kind for c in table_part.spec.columns}.get(target, "ts" if target == "loaded_at" else "text")


def _number_text(part: SourceMapping, value: str) -> str:
    """Text of a number with the declared decimal separator normalised to a point (else as it came)."""
    if part.decimal == ",":
        return (f"CASE WHEN regexp_full_match({value}, '{_NUMBER_WITH_COMMA}') "
                f"THEN REPLACE(REPLACE({value}, '.', ''), ',', '.') ELSE {value} END")
    return (f"CASE WHEN regexp_full_match({value}, '{_NUMBER_WITH_THOUSANDS_COMMA}') "
            f"THEN REPLACE({value}, ',', '') ELSE {value} END")


def _finite(number: str) -> str:
    """``number`` (a DOUBLE expression) when finite, else NULL (NaN, inf: x - x is not 0)."""
    return f"CASE WHEN ({number}) - ({number}) = 0 THEN ({number}) END"


def _operand(part: SourceMapping, source: str, source_type: str) -> str:
    """A source column as a finite DOUBLE, NULL when it is not a number."""
    src = quote_identifier(source)
    if source_type.upper() != "VARCHAR":
        return _finite(f"TRY_CAST({src} AS DOUBLE)")
    return _finite(f"TRY_CAST({_number_text(part, _text(src))} AS DOUBLE)")


def _condition_sql(condition: Condition) -> str:
    value = _text(quote_identifier(condition.column))
    if condition.starts_with is not None:
        return f"COALESCE(starts_with({value}, {quote_literal(condition.starts_with)}), false)"
    return f"COALESCE({value} IN ({', '.join(quote_literal(e) for e in condition.equals)}), false)"


def _negated(number_text: str, condition: Condition | None) -> str:
    if condition is None:
        return number_text
    number = f"TRY_CAST({number_text} AS DOUBLE)"
    return f"CASE WHEN {_condition_sql(condition)} AND {number} IS NOT NULL THEN CAST(-ABS({number}) AS VARCHAR) " \
           f"ELSE {number_text} END"


def _stripped(value: str, expr: ColumnExpr) -> str:
    if expr.strip_prefix:
        p = quote_literal(expr.strip_prefix)
        value = f"CASE WHEN starts_with({value}, {p}) THEN substr({value}, {len(expr.strip_prefix) + 1}) ELSE {value} END"
    if expr.strip_suffix:
        s = quote_literal(expr.strip_suffix)
        value = (f"CASE WHEN ends_with({value}, {s}) THEN left({value}, length({value}) - {len(expr.strip_suffix)}) "
                 f"ELSE {value} END")
    return value


def expression_sql(part: SourceMapping, target: str, types: dict[str, str]) -> str:
    """DuckDB expression turning the source row into the contract text of ``target``.

    ``types`` are the DuckDB types of the source columns (``VARCHAR`` for CSV).
    """
    expr = part.columns[target]
    if expr.kind == "join":
        parts = ", ".join(_text(quote_identifier(c)) for c in expr.sources)
        return f"NULLIF(concat_ws({quote_literal(expr.sep)}, {parts}), '')"
    if expr.kind == "multiply":
        operands = [_operand(part, c, types[c]) for c in expr.sources]
        product = _finite(" * ".join(f"({o})" for o in operands))
        raw = " || '*' || ".join(f"COALESCE({_text(quote_identifier(c))}, 'NULL')" for c in expr.sources)
        text = f"COALESCE(CAST(ROUND({product}, {AMOUNT_DECIMALS}) AS VARCHAR), {raw})"
        return _negated(text, expr.negative_when)
    if expr.kind == "generate":
        raise AssertionError("generated keys are made per table (generated_key_sql)")
    return column_sql(part, target, types[expr.sources[0]])


def column_sql(part: SourceMapping, target: str, source_type: str) -> str:
    """DuckDB expression turning the source column of ``target`` into contract text.

    ``source_type`` is the DuckDB type of the source column (``VARCHAR`` for CSV).
    """
    expr = part.columns[target]
    src = quote_identifier(expr.sources[0])
    kind = _kind(part, target)
    source_type = source_type.upper()
    if kind == "ts" and source_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"strftime(timezone('UTC', {src}), '{_ISO_OUT}')"
    if kind in ("ts", "date") and source_type.startswith(("TIMESTAMP", "DATE")):
        parsed = f"CAST({src} AS TIMESTAMP)"
        if kind == "date":
            return f"strftime({parsed}, '%Y-%m-%d')"
        return f"strftime({_to_utc(parsed, part.timezone)}, '{_ISO_OUT}')"
    value = _stripped(_text(src), expr)
    if kind in ("ts", "date") and source_type == "VARCHAR":
        fmt = part.date_formats.get(target)
        if fmt is not None and "%z" in fmt.lower():
            parsed = f"timezone('UTC', try_strptime({value}, {quote_literal(fmt)}))"
        elif fmt is not None:
            parsed = f"try_strptime({value}, {quote_literal(fmt)})"
            # A date without a time of day stays that calendar date: moving
            # midnight to UTC would put it on the day before.
            if kind == "ts" and _has_time_of_day(fmt):
                parsed = _to_utc(parsed, part.timezone)
        elif kind == "ts" and _converts_zone(part.timezone):
            # Text with its own offset is left for extract, which honours it.
            parsed = _to_utc(
                f"CASE WHEN LENGTH({value}) > 10 AND NOT regexp_matches({value}, '(Z|[+-][0-9]{{2}}:?[0-9]{{2}})$') "
                f"THEN TRY_CAST({value} AS TIMESTAMP) END", part.timezone)
        else:
            return value
        out = "%Y-%m-%d" if kind == "date" else _ISO_OUT
        return f"COALESCE(strftime({parsed}, '{out}'), {value})"
    if kind == "num" and source_type == "VARCHAR":
        return _negated(_number_text(part, value), expr.negative_when)
    if kind == "num":
        return _negated(value, expr.negative_when)
    return value


def _has_time_of_day(fmt: str) -> bool:
    return any(code in fmt for code in ("%H", "%I", "%M", "%S", "%T", "%X", "%c", "%R"))


def _converts_zone(timezone: str | None) -> bool:
    return timezone is not None and timezone.upper() not in ("UTC", "ETC/UTC", "Z")


def _to_utc(timestamp: str, timezone: str | None) -> str:
    if not _converts_zone(timezone):
        return timestamp
    return f"timezone('UTC', timezone({quote_literal(timezone)}, {timestamp}))"


def generated_key_sql(label: str, hashed: list[str]) -> str:
    """A key for rows an export gives none: ``<label>:<hash of the row's mapped values>:<n>``.

    Rows equal in every mapped value are interchangeable, so numbering them in
    any order gives the same table; the key does not depend on row order.
    """
    content = f"md5(concat_ws(chr(31), {', '.join(f'COALESCE({c}, chr(0))' for c in hashed)}))"
    return (f"{quote_literal(label + ':')} || substr({content}, 1, 16) || ':' || "
            f"CAST(ROW_NUMBER() OVER (PARTITION BY {content}) AS VARCHAR)")


def part_select(part: SourceMapping, source: str, types: dict[str, str], columns: list[str], label: str,
                extra: dict[str, str] | None = None) -> str:
    """The SELECT turning ``source`` into the table's text ``columns`` (absent ones NULL), plus ``extra`` ones.

    A generated key hashes the row's other mapped values (an outer SELECT).
    """
    exprs = {}
    for target in columns:
        expr = part.columns.get(target)
        if target in part.constants:
            exprs[target] = quote_literal(part.constants[target])
        elif expr is None or expr.kind == "generate":
            exprs[target] = "CAST(NULL AS VARCHAR)"
        else:
            exprs[target] = expression_sql(part, target, types)
    inner = ", ".join([f"{sql} AS {quote_identifier(t)}" for t, sql in exprs.items()]
                      + [f"{sql} AS {quote_identifier(name)}" for name, sql in (extra or {}).items()])
    select = f"SELECT {inner} FROM {source} src"
    generated = [t for t in columns if part.columns.get(t) is not None and part.columns[t].kind == "generate"]
    if not generated:
        return select
    hashed = [quote_identifier(t) for t in columns if t not in generated and t in part.columns]
    outer = [f"{generated_key_sql(label, hashed)} AS {quote_identifier(t)}" if t in generated
             else quote_identifier(t) for t in columns] + [quote_identifier(n) for n in (extra or {})]
    return f"SELECT {', '.join(outer)} FROM ({select}) g"


def _describe(con: duckdb.DuckDBPyConnection, source: str, label: str, part: SourceMapping,
              needed: list[str]) -> dict[str, str]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except duckdb.Error as exc:
        raise MappingError(f"{label}: cannot be read as {part.source_format} for {part.table}: {exc}") from exc
    types = {name: str(kind) for name, kind, *_ in rows}
    missing = [src for src in needed if src not in types]
    if missing:
        have = ", ".join(types)
        hint = ""
        if len(types) == 1 and part.source_format == "csv":
            hint = (f" (one column only: is the delimiter right? the mapping says "
                    f"{part.delimiter!r}; None = detected; columns separated by spaces: format = \"whitespace\")")
        targets = {}
        for target, expr in part.columns.items():
            for src in expr.read_columns:
                targets.setdefault(src, target)
        listed = ", ".join(f"'{src}' (for {targets.get(src, 'group_lines_by')})" for src in missing)
        raise MappingError(f"{label}: column(s) {listed} not found; the source has: {have}{hint}")
    return types


def check_sample(con: duckdb.DuckDBPyConnection, part: SourceMapping, source: str, label: str,
                 source_types: dict[str, str]) -> list[str]:
    """Check the declared conversions on the first rows of a source; return warnings.

    Raises
    ------
    MappingError
        More than :data:`MAX_SAMPLE_FAILURE_SHARE` of a column's sampled
        values fail its date format or decimal separator (or, for a product,
        are not numbers): the message names the file, the column and an
        example value.
    """
    checks = []
    for target, expr in part.columns.items():
        kind = _kind(part, target)
        if expr.kind == "multiply":
            for src in expr.sources:
                if source_types[src] == "VARCHAR":
                    value = _text(quote_identifier(src))
                    checks.append((target, src, f"numbers with decimal separator {part.decimal!r}", True, value,
                                   f"{_operand(part, src, 'VARCHAR')} IS NOT NULL"))
            continue
        if expr.kind != "column" or source_types[expr.sources[0]] != "VARCHAR" or kind not in ("ts", "date", "num"):
            continue
        src = expr.sources[0]
        value = _stripped(_text(quote_identifier(src)), expr)
        fmt = part.date_formats.get(target)
        if kind == "num":
            ok = f"TRY_CAST({_number_text(part, value)} AS DOUBLE) IS NOT NULL"
            checks.append((target, src, f"numbers with decimal separator {part.decimal!r}", True, value, ok))
        elif fmt is not None:
            ok = f"try_strptime({value}, {quote_literal(fmt)}) IS NOT NULL"
            checks.append((target, src, f"dates in date_format {fmt!r}", True, value, ok))
        else:
            ok = f"regexp_full_match({value}, '{_LOOKS_PARSABLE_DATE}')"
            checks.append((target, src, "ISO or YYYYMMDD dates (no date_format given)", False, value, ok))
    if not checks:
        return []
    exprs = [f"COUNT({value}), SUM(CASE WHEN {value} IS NOT NULL AND NOT ({ok}) THEN 1 ELSE 0 END), "
             f"MIN(CASE WHEN {value} IS NOT NULL AND NOT ({ok}) THEN {value} END)"
             for *_, value, ok in checks]
    sql = f"SELECT {', '.join(exprs)} FROM (SELECT * FROM {source} LIMIT {SAMPLE_ROWS}) src"
    try:
        values = con.execute(sql).fetchall()[0]
    except duckdb.Error as exc:
        raise MappingError(f"{label}: reading the first {SAMPLE_ROWS} rows failed: {exc}") from exc
    warnings = []
    for i, (target, src, what, fatal, _, _) in enumerate(checks):
        seen, failed, example = values[3 * i], values[3 * i + 1] or 0, values[3 * i + 2]
        if seen and failed > MAX_SAMPLE_FAILURE_SHARE * seen:
            message = (f"{label}: column '{src}' (mapped to {part.table}.{target}): {failed} of {seen} sampled "
                       f"values are not {what}, e.g. {example!r}")
            if fatal:
                raise MappingError(message)
            warnings.append(message + "; set date_format in the mapping, or the pipeline's date_order")
    return warnings


# -- reading and writing -------------------------------------------------------------------------

def _read_batches(con: duckdb.DuckDBPyConnection, sql: str, label: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from con.sql(sql).to_arrow_reader(BATCH_ROWS)
    except (duckdb.Error, pa.ArrowException) as exc:
        raise MappingError(f"{label}: reading failed: {exc}") from exc


def _estimated_rows(con: duckdb.DuckDBPyConnection, part: SourceMapping, path: Path) -> int | None:
    if part.source_format == "parquet":
        return int(con.execute(f"SELECT COUNT(*) FROM {file_source_sql(part, path)}").fetchall()[0][0])
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    lines = head.count(b"\n")
    if not lines:
        return None
    return max(1, round(size * lines / len(head)) - (1 if part.header else 0))


class _TableWriter:
    """Replaces one ``raw_*`` table with text columns inside an open transaction."""

    def __init__(self, wh: Warehouse, conn: sa.Connection, table: str, columns: list[str]) -> None:
        self.wh, self.conn, self.table, self.columns = wh, conn, table, columns
        self.rows = 0
        ddl = f"CREATE OR REPLACE TABLE {table} ({', '.join(f'{c} VARCHAR' for c in columns)})"
        if wh.dialect == "duckdb":
            self.raw = conn.connection.driver_connection
            self.raw.execute(ddl)
        else:
            conn.execute(sa.text(ddl))

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        if self.wh.dialect == "duckdb":
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            self.raw.register("_load_batch", table)
            try:
                self.raw.execute(f"INSERT INTO {self.table} SELECT * FROM _load_batch")
            finally:
                self.raw.unregister("_load_batch")
        else:
            self.wh.insert_df(self.table, batch.to_pandas(), self.conn)


class _Sources:
    """The local DuckDB that reads a table's sources, and the warehouse queries it registers as sources."""

    def __init__(self, wh: Warehouse, con: duckdb.DuckDBPyConnection) -> None:
        self.wh, self.con = wh, con
        self._registered = 0

    def relations(self, part: SourceMapping) -> Iterator[tuple[str, str, Path | None]]:
        """``(relation SQL, label, path)`` per source of ``part``."""
        if part.source_format != "warehouse":
            for path in part.files:
                yield file_source_sql(part, path), f"{path.name} ({part.table})", path
            return
        label = f"query for {part.table}"
        try:
            if self.wh.dialect == "duckdb":
                with self.wh.begin() as conn:
                    raw = conn.connection.driver_connection
                    # Paths in the query (read_csv('orders.csv')) are relative to the mapping file.
                    raw.execute(f"SET file_search_path = {quote_literal(str(part.base))}")
                    try:
                        table = raw.execute(part.query).to_arrow_table()
                    finally:
                        raw.execute("RESET file_search_path")
            else:
                table = pa.Table.from_pandas(self.wh.query_df(part.query), preserve_index=False)
        except (duckdb.Error, sa.exc.SQLAlchemyError) as exc:
            raise MappingError(f"{label}: the query failed: {exc}") from exc
        self._registered += 1
        name = f"_query_source_{self._registered}"
        self.con.register(name, table)
        yield name, label, None


def _checked(sources: _Sources, part: SourceMapping, relation: str, label: str,
             group_by: tuple[str, ...] = ()) -> dict[str, str]:
    types = _describe(sources.con, relation, label, part, part.read_columns + list(group_by))
    for warning in check_sample(sources.con, part, relation, label, types):
        log.warning("%s", warning)
        tqdm.write(f"warning: {warning}")
    return types


def load_table(wh: Warehouse, mapping: TableMapping, *, progress: bool = True,
               con: duckdb.DuckDBPyConnection | None = None) -> LoadResult:
    """Replace ``mapping.table`` in the warehouse with its mapped sources, streamed (no reshaping)."""
    columns = mapping.columns
    own = con is None
    con = con or duckdb.connect(config=duckdb_config())
    sources = _Sources(wh, con)
    guests = mapping.table in GUEST_TABLES
    rows_in = rows_guest = 0
    guest_amount = 0.0
    try:
        # Every source is read (queries) and checked before the table is replaced.
        plan = []
        for part in mapping.parts:
            for relation, label, path in sources.relations(part):
                types = _checked(sources, part, relation, label)
                select = part_select(part, relation, types, columns, path.stem if path else "query")
                if guests:
                    amount = ("TRY_CAST(CASE WHEN source_id IS NULL THEN amount END AS DOUBLE)"
                              if "amount" in columns else "CAST(NULL AS DOUBLE)")
                    select = f"SELECT *, source_id IS NULL AS _guest, {amount} AS _amount FROM ({select}) s"
                plan.append((part, select, label, path))
        with wh.begin() as conn:
            writer = _TableWriter(wh, conn, mapping.table, columns)
            for part, select, label, path in plan:
                total = _estimated_rows(con, part, path) if path is not None else None
                with tqdm(total=total, desc=f"{mapping.table} <- {label.split(' (')[0]}", unit="row",
                          unit_scale=True, disable=not progress, leave=True) as bar:
                    for batch in _read_batches(con, select, label):
                        rows_in += batch.num_rows
                        if guests:
                            guest, amount = batch.column("_guest"), batch.column("_amount")
                            rows_guest += pc.sum(guest).as_py() or 0
                            guest_amount += pc.sum(pc.if_else(pc.is_finite(amount), amount, 0.0)).as_py() or 0.0
                            batch = batch.filter(pc.invert(guest)).select(columns)
                        writer.write(batch)
                        bar.update(batch.num_rows)
                    if bar.total is not None and bar.n != bar.total:
                        bar.total = bar.n  # the row count was an estimate
                        bar.refresh()
            rows = writer.rows
    finally:
        if own:
            con.close()
    return LoadResult(mapping.table, rows, mapping.source_label, rows_in=rows_in, rows_guest=rows_guest,
                      guest_amount=guest_amount if guests else None)


# -- reshaped tables: invoice lines, derived customers ---------------------------------------------

def _materialise_lines(sources: _Sources, mapping: TableMapping, derived: list[TableMapping]) -> list[str]:
    """Read every source of ``mapping`` into the local table ``_lines`` (contract text + helper columns).

    Helper columns: ``_value`` (the line's amount as a DOUBLE, grouped tables), ``_k<i>`` (the group
    key's source values), ``_d_<column>`` (columns of the tables derived from this one).
    """
    columns = mapping.columns
    con = sources.con
    con.execute("DROP TABLE IF EXISTS _lines")
    created = False
    for part in mapping.parts:
        for relation, label, path in sources.relations(part):
            types = _checked(sources, part, relation, label, mapping.group_lines_by)
            extra = {f"_k{i}": _text(quote_identifier(c)) for i, c in enumerate(mapping.group_lines_by)}
            if mapping.group_lines_by:
                value = _finite(f"TRY_CAST({expression_sql(part, 'amount', types)} AS DOUBLE)")
                # Sums are exact DECIMAL(38, 6): a line beyond it (1e308) is set aside, not summed.
                extra["_value"] = f"CASE WHEN ABS({value}) < {MAX_LINE_VALUE:.0e} THEN {value} END"
            for d in derived:
                for target, expr in d.derive_columns.items():
                    fake = SourceMapping(table=d.table, source_format=part.source_format, columns={target: expr},
                                         decimal=part.decimal, timezone=part.timezone, base=part.base)
                    extra[f"_d_{target}"] = expression_sql(fake, target, types)
            select = part_select(part, relation, types, columns, path.stem if path else "query", extra)
            try:
                con.execute(f"{'INSERT INTO _lines' if created else 'CREATE TABLE _lines AS'} {select}")
            except duckdb.Error as exc:
                raise MappingError(f"{label}: reading failed: {exc}") from exc
            created = True
    return columns


def _reshaped_results(sources: _Sources, mapping: TableMapping) -> tuple[LoadResult, dict[str, str]]:
    """Counts of the materialised lines and the SQL of the rows to write (per table)."""
    con = sources.con
    rows_in = con.execute("SELECT COUNT(*) FROM _lines").fetchall()[0][0]
    guest = "source_id IS NULL" if mapping.table in GUEST_TABLES else "false"
    rows_guest, guest_amount = con.execute(
        f"SELECT COUNT(*), SUM(CASE WHEN {_finite('TRY_CAST(amount AS DOUBLE)')} IS NOT NULL "
        f"THEN TRY_CAST(amount AS DOUBLE) ELSE 0 END) FROM _lines WHERE {guest}").fetchall()[0]
    columns = mapping.columns
    if not mapping.group_lines_by:
        select = f"SELECT {', '.join(quote_identifier(c) for c in columns)} FROM _lines WHERE NOT ({guest})"
        result = LoadResult(mapping.table, 0, mapping.source_label, rows_in=rows_in, rows_guest=rows_guest,
                            guest_amount=float(guest_amount or 0) if mapping.table in GUEST_TABLES else None)
        return result, {mapping.table: select}
    keys = [f"_k{i}" for i in range(len(mapping.group_lines_by))]
    key_text = " || '|' || ".join(f"COALESCE({k}, '')" for k in keys)
    missing_key = " OR ".join(f"{k} IS NULL" for k in keys)
    con.execute("DROP TABLE IF EXISTS _set_aside")
    con.execute(
        f"CREATE TABLE _set_aside AS SELECT {key_text} AS source_key, "
        f"CASE WHEN {missing_key} THEN 'missing_group_key' "
        f"WHEN {_finite('TRY_CAST(amount AS DOUBLE)')} IS NOT NULL THEN 'line_value_out_of_range' "
        f"ELSE 'bad_line_value' END AS reason, "
        f"'amount=' || COALESCE(amount, 'NULL') AS detail FROM _lines "
        f"WHERE NOT ({guest}) AND (({missing_key}) OR _value IS NULL)")
    reasons = dict(con.execute("SELECT reason, COUNT(*) FROM _set_aside GROUP BY 1").fetchall())
    kinds = {c.name: c.kind for c in mapping.spec.columns}
    cents = f"CAST(ROUND(_value, {AMOUNT_DECIMALS}) AS DECIMAL(38, {AMOUNT_DECIMALS}))"
    aggregates = []
    for c in columns:
        if c == "amount":
            aggregates.append(f"SUM(CASE WHEN _value > 0 THEN {cents} ELSE 0 END) AS _positive")
            aggregates.append(f"SUM(CASE WHEN _value < 0 THEN -{cents} ELSE 0 END) AS _negative")
        elif c == "returned_amount":
            continue
        elif kinds.get(c) == "num":
            number = _finite(f"TRY_CAST({quote_identifier(c)} AS DOUBLE)")
            aggregates.append(f"CAST(SUM({number}) AS VARCHAR) AS {quote_identifier(c)}")
        else:
            aggregates.append(f"MIN({quote_identifier(c)}) AS {quote_identifier(c)}")
    con.execute("DROP TABLE IF EXISTS _groups")
    con.execute(
        f"CREATE TABLE _groups AS SELECT {', '.join(keys)}, COUNT(*) AS _lines, {', '.join(aggregates)} "
        f"FROM _lines WHERE NOT ({guest}) AND NOT ({missing_key}) AND _value IS NOT NULL "
        f"GROUP BY {', '.join(keys)}")
    groups, grouped_lines, orders, returns = con.execute(
        "SELECT COUNT(*), COALESCE(SUM(_lines), 0), COUNT(CASE WHEN _positive > 0 OR _negative = 0 THEN 1 END), "
        "COUNT(CASE WHEN _positive = 0 AND _negative > 0 THEN 1 END) FROM _groups").fetchall()[0]
    order_cols = []
    for c in columns:
        if c == "amount":
            order_cols.append("CAST(_positive AS DOUBLE)::VARCHAR AS amount")
        elif c == "returned_amount":
            order_cols.append("CASE WHEN _negative > 0 THEN CAST(_negative AS DOUBLE)::VARCHAR END AS returned_amount")
        else:
            order_cols.append(quote_identifier(c))
    orders_sql = f"SELECT {', '.join(order_cols)} FROM _groups WHERE _positive > 0 OR _negative = 0"
    returns_sql = ("SELECT order_id AS return_id, source_system, source_id, order_ts AS return_ts, "
                   "CAST(_negative AS DOUBLE)::VARCHAR AS amount, CAST(NULL AS VARCHAR) AS order_id "
                   "FROM _groups WHERE _positive = 0 AND _negative > 0")
    quarantined = sum(reasons.values())
    result = LoadResult(mapping.table, int(orders), mapping.source_label, rows_in=rows_in,
                        rows_aggregated=int(grouped_lines - groups), rows_quarantined=int(quarantined),
                        rows_guest=rows_guest, guest_amount=float(guest_amount or 0),
                        quarantine_reasons={k: int(v) for k, v in reasons.items()}, rows_as_returns=int(returns))
    return result, {mapping.table: orders_sql, "raw_returns": returns_sql}


def _derived_sql(mapping: TableMapping) -> str:
    """One customer record per customer of the lines: created_at = the first purchase.

    The first plausible purchase: one dated before the default business start (a year-0001
    placeholder, which extract quarantines) would otherwise date the customer record and take
    every order of the customer with it.
    """
    ts = "COALESCE(TRY_CAST(order_ts AS TIMESTAMP), try_strptime(order_ts, '%Y%m%d'))"
    floor = quote_literal(BY_NAME["business_start_date"].default)
    first = (f"ROW_NUMBER() OVER (PARTITION BY source_system, source_id ORDER BY "
             f"CASE WHEN {ts} >= CAST({floor} AS TIMESTAMP) THEN 0 ELSE 1 END, {ts} NULLS LAST, order_ts"
             + ", ".join([""] + [f"_d_{c}" for c in mapping.derive_columns]) + ")")
    cols = ", ".join(["source_system", "source_id", "order_ts AS created_at"]
                     + [f"_d_{c} AS {quote_identifier(c)}" for c in mapping.derive_columns])
    return (f"SELECT {cols} FROM (SELECT *, {first} AS _first FROM _lines WHERE source_id IS NOT NULL) l "
            "WHERE _first = 1")


def _write_query(wh: Warehouse, conn: sa.Connection, con: duckdb.DuckDBPyConnection, table: str,
                 columns: list[str], sql: str, progress: bool) -> int:
    writer = _TableWriter(wh, conn, table, columns)
    with tqdm(desc=f"{table} (write)", unit="row", unit_scale=True, disable=not progress, leave=False) as bar:
        for batch in _read_batches(con, sql, table):
            writer.write(batch)
            bar.update(batch.num_rows)
    return writer.rows


def load_reshaped(wh: Warehouse, mapping: TableMapping, derived: list[TableMapping], *, progress: bool = True,
                  con: duckdb.DuckDBPyConnection) -> list[LoadResult]:
    """Load a table whose rows are reshaped (grouped lines) or from which other tables are derived."""
    sources = _Sources(wh, con)
    columns = _materialise_lines(sources, mapping, derived)
    result, statements = _reshaped_results(sources, mapping)
    results = [result]
    returns_columns = ["return_id", "source_system", "source_id", "return_ts", "amount", "order_id"]
    with wh.begin() as conn:
        written = _write_query(wh, conn, con, mapping.table, columns, statements[mapping.table], progress)
        if "raw_returns" in statements:
            returned = _write_query(wh, conn, con, "raw_returns", returns_columns, statements["raw_returns"],
                                    progress)
            if (written, returned) != (result.rows, result.rows_as_returns):
                raise AssertionError(f"{mapping.table}: wrote {written} orders and {returned} returns, counted "
                                     f"{result.rows} and {result.rows_as_returns}")
            results.append(LoadResult("raw_returns", returned, f"cancellation lines of {mapping.table}",
                                      rows_in=returned, derived_from=mapping.table))
        else:
            result.rows = written
        set_aside = (con.sql("SELECT * FROM _set_aside").to_arrow_table().to_pandas()
                     if mapping.group_lines_by else pd.DataFrame())
        _replace_load_quarantine(wh, conn, mapping.table, mapping.source_label, set_aside)
    for d in derived:
        customers = con.execute("SELECT COUNT(*) FROM _lines WHERE source_id IS NOT NULL").fetchall()[0][0]
        with wh.begin() as conn:
            rows = _write_query(wh, conn, con, d.table, d.columns, _derived_sql(d), progress)
        results.append(LoadResult(d.table, rows, f"derived from {mapping.table} (created_at = first purchase)",
                                  rows_in=int(customers), rows_aggregated=int(customers) - rows,
                                  derived_from=mapping.table))
    return results


def _replace_load_quarantine(wh: Warehouse, conn: sa.Connection, table: str, source: str,
                             rows: pd.DataFrame) -> None:
    conn.execute(sa.text("DELETE FROM load_quarantine WHERE table_name = :t"), {"t": table})
    if len(rows):
        frame = rows.assign(table_name=table, source=source,
                            loaded_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
        wh.insert_df("load_quarantine", frame[["table_name", "source", "source_key", "reason", "detail",
                                               "loaded_at"]], conn)


def _load_in_warehouse(wh: Warehouse, mapping: TableMapping) -> LoadResult:
    """A query or table of a non-DuckDB warehouse, copied inside the warehouse (plain columns only)."""
    part = mapping.parts[0]
    label = f"query for {mapping.table}"
    plain = all(e.kind == "column" and not e.strip_prefix and not e.strip_suffix and not e.negative_when
                for e in part.columns.values())
    converts = part.date_formats or part.decimal != "." or _converts_zone(part.timezone)
    if converts or not plain or len(mapping.parts) > 1 or mapping.group_lines_by:
        raise MappingError(
            f"{label}: date_format, decimal, timezone, expressions, several sources and group_lines_by are "
            f"applied by DuckDB; on {wh.dialect} convert in the query instead (TO_TIMESTAMP, REPLACE...) and "
            "map its result")
    exprs = [f"CAST({quote_identifier(e.sources[0])} AS VARCHAR) AS {target}" for target, e in part.columns.items()]
    exprs += [f"{quote_literal(value)} AS {target}" for target, value in part.constants.items()]
    with wh.begin() as conn:
        conn.execute(sa.text(f"CREATE OR REPLACE TABLE {mapping.table} AS "
                             f"SELECT {', '.join(exprs)} FROM ({part.query}) src"))
    rows = int(wh.scalar(f"SELECT COUNT(*) FROM {mapping.table}"))
    return LoadResult(mapping.table, rows, mapping.source_label, rows_in=rows)


def load_mapping(mapping: Mapping, warehouse_url: str, *, progress: bool = True,
                 tables: list[str] | None = None) -> list[LoadResult]:
    """Load every table of ``mapping`` (or only ``tables``) and record it in ``load_manifest``.

    Every table's sources are checked (columns, sampled conversions) before
    its rows are written; tables load one after the other, each atomically
    (a grouped table together with the returns made from its lines).
    """
    selected = [t for t in mapping.tables if tables is None or t.table in tables]
    if tables is not None:
        unknown = set(tables) - {t.table for t in mapping.tables}
        if unknown:
            raise MappingError(f"{mapping.path.name}: no mapping for {', '.join(sorted(unknown))}")
    names = {t.table for t in selected}
    for t in selected:
        if t.derive and t.derive not in names:
            raise MappingError(f"{mapping.path.name}: {t.table} is derived from {t.derive}: load both "
                               f"(--table {t.derive} --table {t.table})")
    results: list[LoadResult] = []
    with Warehouse(warehouse_url) as wh:
        wh.ensure_schema()
        con = duckdb.connect(config=duckdb_config())
        try:
            for table_mapping in selected:
                if table_mapping.derive:
                    continue  # loaded with the table it is derived from
                derived = [t for t in selected if t.derive == table_mapping.table]
                warehouse_only = (wh.dialect != "duckdb"
                                  and all(p.source_format == "warehouse" for p in table_mapping.parts))
                if warehouse_only and not derived:
                    loaded = [_load_in_warehouse(wh, table_mapping)]
                elif table_mapping.group_lines_by or derived:
                    loaded = load_reshaped(wh, table_mapping, derived, progress=progress, con=con)
                else:
                    loaded = [load_table(wh, table_mapping, progress=progress, con=con)]
                for result in loaded:
                    # An erased person never comes back from a file loaded again (include.erasure).
                    erased = sum(remove_erased_rows(wh, [result.table]).values())
                    result.rows -= erased
                    result.rows_erased += erased
                    _record(wh, mapping, result, mapping.table(result.table) or table_mapping)
                    results.append(result)
        finally:
            con.close()
    return results


def _record(wh: Warehouse, mapping: Mapping, result: LoadResult, table_mapping: TableMapping) -> None:
    if not result.balanced:
        raise AssertionError(f"{result.table}: rows do not balance: {result.summary()}")
    manifest = pd.DataFrame([{
        "table_name": result.table, "source": result.source, "rows_loaded": result.rows,
        "currency": table_mapping.currency, "timezone": table_mapping.timezone,
        "date_format": ", ".join(f"{c}={f}" for c, f in table_mapping.date_formats.items()) or None,
        "decimal_separator": table_mapping.decimal, "mapping_file": str(mapping.path),
        "loaded_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "rows_in": result.rows_in, "rows_aggregated": result.rows_aggregated,
        "rows_quarantined": result.rows_quarantined, "rows_guest": result.rows_guest,
        "guest_amount": result.guest_amount if result.guest_amount is None or math.isfinite(result.guest_amount)
        else None,
        "derived_from": result.derived_from, "rows_as_returns": result.rows_as_returns,
        "rows_erased": result.rows_erased,
    }])
    wh.replace_partition("load_manifest", manifest, {"table_name": result.table})
    if not result.rows_quarantined:
        with wh.begin() as conn:
            conn.execute(sa.text("DELETE FROM load_quarantine WHERE table_name = :t"), {"t": result.table})
    log.info("loaded %s: %s <- %s", result.table, result.summary(), result.source)
