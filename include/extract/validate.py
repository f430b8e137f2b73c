"""Extract and validate raw CDP tables into as-of-date staging tables.

The input contract (README, "Input contract") is declared here as
:data:`TABLE_SPECS`. For each raw table the stage generates one SQL script
(warehouse-side, DuckDB and Snowflake alike) that

1. types every column (raw CDP exports are often text): dates and times in
   ISO 8601 with a UTC offset converted to UTC, YYYYMMDD or the configured
   day/month order (:func:`build_validation_sql`), numbers with ``TRY_CAST``
   where only finite values count; a column the warehouse already types as a
   date, time or number (:func:`raw_column_types`) is used as it is;
2. keeps the rows *in scope* for the run: loaded on or before the as-of date
   when the table has ``loaded_at``, else with an event time on or before it;
3. gives every in-scope row at most one reason, first failing rule on a
   *required* column wins: ``missing_required_value``, ``unparsable_date``,
   ``non_numeric_value``, ``negative_value``, ``future_date`` (event after its
   own ``loaded_at``), ``unknown_customer_id`` (no identity record),
   ``duplicate_key``; an invalid *optional* value is nulled instead and
   recorded in ``field_issues`` (the row is kept);
4. writes clean rows to the staging table and the others to ``quarantine``
   with the reason and the offending value, replacing this date's rows; the
   ``id_*`` columns of staged identity records go to
   ``stg_identity_identifiers``.

Every in-scope row lands in exactly one of staging or quarantine and every
nulled value has a ``field_issues`` row, so nothing is silently dropped; rows
after the as-of date are counted in ``extract_log``.

Size: it generates the whole contract's validation SQL (dates in every accepted layout,
numbers, keys, references) for DuckDB and Snowflake alike; the layouts and the rules share
the same expression builders.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from include.runtime.errors import BadDataError, WarehouseError
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

TEXT, TS, DATE, NUM = "text", "ts", "date", "num"
_SQL_TYPE = {TEXT: "VARCHAR", TS: "TIMESTAMP", DATE: "DATE", NUM: "DOUBLE"}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = TEXT
    required: bool = False
    nonnegative: bool = False


@dataclass(frozen=True)
class TableSpec:
    """One raw table of the input contract and the staging table it feeds."""

    raw: str
    staged: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    event_column: str
    required: bool = False
    references_identity: bool = True

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


_ID_COLUMNS = (Column("source_system", required=True), Column("source_id", required=True))

TABLE_SPECS: tuple[TableSpec, ...] = (
    TableSpec(
        raw="raw_identity_records",
        staged="stg_identity_records",
        columns=_ID_COLUMNS
        + (
            Column("first_name"), Column("last_name"), Column("email"), Column("phone"),
            Column("address"), Column("postcode"), Column("date_of_birth", DATE),
            Column("device_id"), Column("region"), Column("created_at", TS, required=True),
        ),
        key=("source_system", "source_id"),
        event_column="created_at",
        required=True,
        references_identity=False,
    ),
    TableSpec(
        raw="raw_orders",
        staged="stg_orders",
        columns=(Column("order_id", required=True),)
        + _ID_COLUMNS
        + (
            Column("order_ts", TS, required=True),
            Column("amount", NUM, required=True, nonnegative=True),
            Column("discount", NUM, nonnegative=True),
            Column("returned_amount", NUM, nonnegative=True),
            Column("channel"), Column("category"),
        ),
        key=("order_id",),
        event_column="order_ts",
        required=True,
    ),
    TableSpec(
        raw="raw_support_contacts",
        staged="stg_support_contacts",
        columns=(Column("contact_id", required=True),)
        + _ID_COLUMNS
        + (Column("contact_ts", TS, required=True), Column("channel"),
           Column("cost", NUM, nonnegative=True)),
        key=("contact_id",),
        event_column="contact_ts",
    ),
    TableSpec(
        raw="raw_product_usage",
        staged="stg_product_usage",
        columns=_ID_COLUMNS
        + (Column("usage_date", DATE, required=True),
           Column("sessions", NUM, required=True, nonnegative=True)),
        key=("source_system", "source_id", "usage_date"),
        event_column="usage_date",
    ),
    TableSpec(
        raw="raw_email_activity",
        staged="stg_email_activity",
        columns=_ID_COLUMNS
        + (Column("period_start", DATE, required=True),
           Column("sends", NUM, required=True, nonnegative=True),
           Column("opens", NUM, nonnegative=True), Column("clicks", NUM, nonnegative=True)),
        key=("source_system", "source_id", "period_start"),
        event_column="period_start",
    ),
    TableSpec(
        raw="raw_subscriptions",
        staged="stg_subscriptions",
        columns=_ID_COLUMNS
        + (Column("plan_tier", required=True), Column("valid_from", DATE, required=True)),
        key=("source_system", "source_id", "valid_from"),
        event_column="valid_from",
    ),
    # The business's own labels (tiers, legacy personas), one row per record, scheme and
    # start date; compared with the behavioural segments by include/comparison.
    TableSpec(
        raw="raw_legacy_labels",
        staged="stg_legacy_labels",
        columns=_ID_COLUMNS
        + (Column("scheme", required=True), Column("label", required=True), Column("valid_from", DATE)),
        key=("source_system", "source_id", "scheme", "valid_from"),
        event_column="valid_from",
    ),
)


#: Accepted values of the ``date_order`` setting: which day/month order a
#: date written with separators and a four-digit year last is read in.
DATE_ORDERS = ("ISO", "DMY", "MDY")

#: Prefix of the extra identifier columns of ``raw_identity_records``.
EXTRA_ID_PREFIX = "id_"
_EXTRA_ID_NAME = re.compile(r"^id_[a-z0-9_]+$")


def _text(col: str, dialect: str, data_type: str | None = None) -> str:
    """Trimmed text of ``col``, NULL when blank."""
    value = col if data_type in ("varchar", "text") else f"CAST({col} AS VARCHAR)"
    if dialect == "duckdb":
        # DuckDB's TRIM strips Unicode space separators, so it decodes every
        # value (a third of the stage's CPU at 480,000 customers); a value of
        # ASCII characters (bytes = characters) that neither starts nor ends
        # with a space has nothing to strip and skips it.
        return (f"CASE WHEN {value} NOT LIKE ' %' AND {value} NOT LIKE '% ' AND STRLEN({value}) = LENGTH({value}) "
                f"THEN NULLIF({value}, '') ELSE NULLIF(TRIM({value}), '') END")
    return f"NULLIF(TRIM({value}), '')"


def _try_timestamp(expr: str, dialect: str) -> str:
    # The date guard makes the cast NULL-safe on fakesnow too, whose TRY_CAST to
    # TIMESTAMP raises on unparsable text; DuckDB's TRY_CAST does not need it
    # (a second cast per value, 36M values at 480,000 customers).
    if dialect == "duckdb":
        return f"TRY_CAST({expr} AS TIMESTAMP)"
    return f"CASE WHEN TRY_CAST(SUBSTR({expr}, 1, 10) AS DATE) IS NOT NULL THEN TRY_CAST({expr} AS TIMESTAMP) END"


def _add_minutes(ts: str, minutes: str, dialect: str) -> str:
    # The one dialect difference of the parser: neither engine has the other's
    # form (DuckDB has no DATEADD; Snowflake cannot multiply an interval).
    if dialect == "snowflake":
        return f"DATEADD(minute, {minutes}, {ts})"
    return f"({ts} + ({minutes}) * INTERVAL '1 minute')"


def _time_layers(name: str, date_order: str) -> list[str]:
    """Per-layer SQL expressions that turn ``{name}__raw`` text into an ISO string.

    Returns the expressions of four successive SELECT layers (each may refer
    to the previous layer's columns): separator, zone split, date part, ISO.
    String functions only (``SUBSTR``, ``SPLIT_PART``, ``LPAD``...), so the
    same text runs on DuckDB and Snowflake and never depends on a session's
    date-format or time-zone setting.
    """
    raw, s, loc, d = f"{name}__raw", f"{name}__s", f"{name}__loc", f"{name}__d"
    fast = f"{name}__fast"
    # Fast path: plain 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS' or with a fraction of
    # six digits (no room for an offset) skips the string surgery below, which
    # then runs on NULLs; most warehouse exports look like this.
    # (LIKE patterns: cheaper than SUBSTR, which counts characters, on both engines.)
    plain = (
        f"({raw} LIKE '____-__-__ ________' OR {raw} LIKE '____-__-__' "
        f"OR {raw} LIKE '____-__-__ ________.______')"
    )
    sep = (
        f"CASE WHEN {plain} THEN {raw} END AS {fast}, "
        f"CASE WHEN {plain} THEN NULL WHEN SUBSTR({raw}, 11, 1) = 'T' "
        f"THEN SUBSTR({raw}, 1, 10) || ' ' || SUBSTR({raw}, 12) ELSE {raw} END AS {s}"
    )
    # A trailing UTC offset: 'Z', '+hh:mm' or '+hhmm' after a time of day.
    zone_len = (
        f"CASE WHEN LENGTH({s}) > 10 AND SUBSTR({s}, LENGTH({s}), 1) = 'Z' THEN 1 "
        f"WHEN LENGTH({s}) > 16 AND SUBSTR({s}, LENGTH({s}) - 5, 1) IN ('+', '-') "
        f"AND SUBSTR({s}, LENGTH({s}) - 2, 1) = ':' THEN 6 "
        f"WHEN LENGTH({s}) > 15 AND SUBSTR({s}, LENGTH({s}) - 4, 1) IN ('+', '-') "
        f"AND SUBSTR({s}, LENGTH({s}) - 7, 1) = ':' THEN 5 ELSE 0 END"
    )
    zone = [
        f"{s}", fast,
        f"CASE {zone_len} WHEN 1 THEN '+00:00' "
        f"WHEN 6 THEN SUBSTR({s}, LENGTH({s}) - 5) "
        f"WHEN 5 THEN SUBSTR({s}, LENGTH({s}) - 4, 3) || ':' || SUBSTR({s}, LENGTH({s}) - 1) END AS {name}__zone",
        f"TRIM(SUBSTR({s}, 1, LENGTH({s}) - {zone_len})) AS {loc}",
    ]
    date_part = [f"{loc}", fast, f"{name}__zone", f"SPLIT_PART({loc}, ' ', 1) AS {d}",
                 f"REPLACE(REPLACE(SPLIT_PART({loc}, ' ', 1), '.', '/'), '-', '/') AS {name}__dn"]
    dn = f"{name}__dn"
    rest = f"SUBSTR({loc}, LENGTH({d}) + 1)"
    branches = [
        # ISO and year-first forms: YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD (+ time).
        f"WHEN SUBSTR({loc}, 5, 1) IN ('-', '/', '.') AND SUBSTR({loc}, 8, 1) = SUBSTR({loc}, 5, 1) "
        f"THEN SUBSTR({loc}, 1, 4) || '-' || SUBSTR({loc}, 6, 2) || '-' || SUBSTR({loc}, 9)",
        # YYYYMMDD (+ time).
        f"WHEN LENGTH({d}) = 8 AND TRY_CAST({d} AS BIGINT) IS NOT NULL "
        f"THEN SUBSTR({d}, 1, 4) || '-' || SUBSTR({d}, 5, 2) || '-' || SUBSTR({d}, 7, 2) || {rest}",
    ]
    if date_order in ("DMY", "MDY"):
        first, second = f"SPLIT_PART({dn}, '/', 1)", f"SPLIT_PART({dn}, '/', 2)"
        day, month = (first, second) if date_order == "DMY" else (second, first)
        branches.append(
            f"WHEN LENGTH(SPLIT_PART({dn}, '/', 3)) = 4 AND SPLIT_PART({dn}, '/', 4) = '' "
            f"AND LENGTH({first}) IN (1, 2) AND LENGTH({second}) IN (1, 2) "
            f"THEN SPLIT_PART({dn}, '/', 3) || '-' || LPAD({month}, 2, '0') || '-' || LPAD({day}, 2, '0') || {rest}"
        )
    iso = [f"COALESCE({fast}, CASE {' '.join(branches)} END) AS {name}__iso", f"{name}__zone"]
    return [sep, ", ".join(zone), ", ".join(date_part), ", ".join(iso)]


def _timestamp_utc(name: str, dialect: str) -> tuple[str, str]:
    """The final two layers of a timestamp: local time + offset, then UTC."""
    zone = f"{name}__zone"
    hours, minutes = f"TRY_CAST(SUBSTR({zone}, 2, 2) AS INT)", f"TRY_CAST(SUBSTR({zone}, 5, 2) AS INT)"
    offset = (
        f"CASE WHEN {zone} IS NULL THEN 0 WHEN {hours} <= 14 AND {minutes} < 60 "
        f"THEN (CASE WHEN SUBSTR({zone}, 1, 1) = '-' THEN -1 ELSE 1 END) * ({hours} * 60 + {minutes}) END"
    )
    local = f"{_try_timestamp(f'{name}__iso', dialect)} AS {name}__local, {offset} AS {name}__offset"
    utc = f"{_add_minutes(f'{name}__local', f'-{name}__offset', dialect)}"
    return local, utc


#: Warehouse column types (lower case, without precision) that already hold a
#: value of each kind: such a column is used as it is instead of being parsed
#: from its text. DuckDB and Snowflake names; time-zone aware types are parsed
#: from their text (their offset is converted like any other).
_NATIVE_TYPES = {
    TS: {"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp_ntz", "datetime", "date"},
    DATE: {"date", "timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp_ntz", "datetime"},
    NUM: {"tinyint", "smallint", "integer", "int", "bigint", "hugeint", "utinyint", "usmallint", "uinteger",
          "ubigint", "uhugeint", "decimal", "numeric", "number", "double", "float", "real", "double precision"},
}
#: Native numeric types that can hold NaN or infinity.
_FLOAT_TYPES = {"double", "float", "real", "double precision"}


def _base_type(data_type: str) -> str:
    """``DECIMAL(18,2)`` -> ``decimal``: the lower-case type name without precision."""
    return data_type.split("(", 1)[0].strip().lower()


def raw_column_types(wh: Warehouse) -> dict[str, dict[str, str]]:
    """Column types of the contract's raw tables, from one catalogue query.

    Returns ``{raw table: {column: lower-case type name}}`` (names lower case,
    precision dropped); :func:`build_validation_sql` uses a natively typed
    date, time or number column as it is instead of parsing its text.
    """
    names = ", ".join(f"'{spec.raw}'" for spec in TABLE_SPECS)
    frame = wh.query_df(
        "SELECT LOWER(table_name) AS table_name, LOWER(column_name) AS column_name, data_type "
        "FROM information_schema.columns WHERE table_schema = CURRENT_SCHEMA() "
        f"AND LOWER(table_name) IN ({names})")
    types: dict[str, dict[str, str]] = {}
    for table, column, data_type in frame.itertuples(index=False):
        types.setdefault(table, {})[column] = _base_type(str(data_type))
    return types


def extra_identifier_columns(present: set[str]) -> list[str]:
    """The ``id_*`` columns of ``raw_identity_records`` that are extra identifiers, sorted."""
    return sorted(c for c in present if c.startswith(EXTRA_ID_PREFIX))


def build_validation_sql(
    spec: TableSpec, present: set[str], *, dialect: str = "duckdb", date_order: str = "ISO",
    types: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the SQL statements that validate ``spec.raw`` into staging and quarantine.

    Parameters
    ----------
    spec
        The contract table.
    present
        The columns the raw table has; absent optional columns become typed
        NULLs. For ``raw_identity_records`` its ``id_*`` columns are staged
        into ``stg_identity_identifiers``.
    dialect
        ``duckdb`` or ``snowflake``: only the minute arithmetic of UTC
        offsets differs.
    date_order
        ``ISO`` accepts only unambiguous dates (ISO, year-first, YYYYMMDD);
        ``DMY`` / ``MDY`` also read ``31/12/1980`` / ``12/31/1980`` (``/``,
        ``.`` or ``-`` separated, four-digit year last).
    types
        Warehouse type of each raw column (:func:`raw_column_types`); a date,
        time or number column whose type already holds that kind is used as
        it is (a native DOUBLE is still checked to be finite) and cast to
        text only for keys and quarantine details. Omitted: every column is
        read as text.

    Bind parameters: ``:as_of_date`` (DATE) and ``:cutoff_ts`` (exclusive
    upper bound, the start of the next day). Statements whose key is absent
    from the result have nothing to do for this table.
    """
    if date_order not in DATE_ORDERS:
        raise ValueError(f"date_order must be one of {', '.join(DATE_ORDERS)}, got {date_order!r}")
    has_loaded_at = "loaded_at" in present
    extra_ids = extra_identifier_columns(present) if spec.raw == "raw_identity_records" else []
    types = {name.lower(): _base_type(kind) for name, kind in (types or {}).items()}
    # Natively typed columns skip the text layers (at 480,000 customers the demo's
    # email activity alone is 9.8M typed dates and counts).
    native = {c.name for c in spec.columns if c.name in present and c.kind != TEXT
              and types.get(c.name) in _NATIVE_TYPES[c.kind]}
    if has_loaded_at and types.get("loaded_at") in _NATIVE_TYPES[TS]:
        native.add("loaded_at")
    parsed = [c for c in spec.columns if c.name in present and c.kind in (TS, DATE) and c.name not in native]
    parsed_names = [c.name for c in parsed] + (["loaded_at"] if has_loaded_at and "loaded_at" not in native else [])

    text_kind = {c.name for c in spec.columns if c.kind == TEXT}

    def as_text(name: str, prefix: str = "t.") -> str:
        """The raw value of ``name`` as text (a native value is cast only where text is shown).

        A text column's value is its raw text: the check table keeps it once.
        """
        if name in text_kind:
            return f"{prefix}{name}"
        return f"CAST({prefix}{name}__raw AS VARCHAR)" if name in native else f"{prefix}{name}__raw"

    # Layer 0: trimmed text of every column; later layers add parsed values.
    texts, carry = [], []
    for col in spec.columns:
        if col.name in native:
            texts.append(f"{col.name} AS {col.name}__raw")
        elif col.name in present:
            texts.append(f"{_text(col.name, dialect, types.get(col.name))} AS {col.name}__raw")
        else:
            texts.append(f"CAST(NULL AS VARCHAR) AS {col.name}__raw")
        carry.append(f"{col.name}__raw")
    if has_loaded_at:
        texts.append("loaded_at AS loaded_at__raw" if "loaded_at" in native
                     else f"{_text('loaded_at', dialect, types.get('loaded_at'))} AS loaded_at__raw")
        carry.append("loaded_at__raw")
    for name in extra_ids:
        texts.append(f"{_text(name, dialect, types.get(name))} AS {name}")
        carry.append(name)
    layers = [", ".join(texts)]
    for step in range(4):
        exprs = list(carry)
        for name in parsed_names:
            exprs.append(_time_layers(name, date_order)[step])
        layers.append(", ".join(exprs))
    utc = {}
    last = list(carry)
    for name in parsed_names:
        local, utc[name] = _timestamp_utc(name, dialect)
        last.append(local)
    layers.append(", ".join(last))

    typed = [f"{c}" for c in carry]
    for col in spec.columns:
        name = col.name
        if name not in present:
            typed.append(f"CAST(NULL AS {_SQL_TYPE[col.kind]}) AS {name}")
        elif name in native and col.kind == NUM and types[name] in _FLOAT_TYPES:
            typed.append(f"CASE WHEN {name}__raw - {name}__raw = 0 THEN CAST({name}__raw AS DOUBLE) END AS {name}")
        elif name in native:
            typed.append(f"CAST({name}__raw AS {_SQL_TYPE[col.kind]}) AS {name}")
        elif col.kind == TEXT:
            typed.append(f"{name}__raw AS {name}")
        elif col.kind == TS:
            typed.append(f"{utc[name]} AS {name}")
        elif col.kind == DATE:
            # A calendar date stays the date as written, whatever its offset.
            typed.append(f"CAST({name}__local AS DATE) AS {name}")
        else:
            # NaN, inf and overflowing text (1e309) cast to a DOUBLE on both
            # engines; x - x = 0 holds for finite values only.
            typed.append(
                f"CASE WHEN TRY_CAST({name}__raw AS DOUBLE) - TRY_CAST({name}__raw AS DOUBLE) = 0 "
                f"THEN TRY_CAST({name}__raw AS DOUBLE) END AS {name}"
            )
    if "loaded_at" in native:
        typed.append("CAST(loaded_at__raw AS TIMESTAMP) AS _loaded_at")
    elif has_loaded_at:
        typed.append(f"{utc['loaded_at']} AS _loaded_at")
    else:
        typed.append("CAST(NULL AS TIMESTAMP) AS _loaded_at")

    reasons, details = [], []

    def add(condition: str, reason: str, column: str, detail_condition: str | None = None) -> None:
        reasons.append(f"WHEN {condition} THEN '{reason}'")
        details.append(f"WHEN {detail_condition or condition} THEN '{column}=' || COALESCE({as_text(column)}, 'NULL')")

    def failure(col: Column) -> str:
        return f"t.{col.name}__raw IS NOT NULL AND t.{col.name} IS NULL"

    required = [c for c in spec.columns if c.required and c.name in present]
    for col in required:
        add(f"t.{col.name}__raw IS NULL", "missing_required_value", col.name)
    for col in required:
        if col.kind in (TS, DATE):
            add(failure(col), "unparsable_date", col.name)
    for col in required:
        if col.kind == NUM:
            add(failure(col), "non_numeric_value", col.name)
    for col in required:
        if col.nonnegative:
            add(f"t.{col.name} < 0", "negative_value", col.name)
    if has_loaded_at:
        add(f"t._loaded_at IS NOT NULL AND t.{spec.event_column} > t._loaded_at",
            "future_date", spec.event_column)
    if spec.references_identity:
        add("ids.source_id IS NULL", "unknown_customer_id", "source_id", "t._reason = 'unknown_customer_id'")

    # An invalid optional value is nulled and recorded in field_issues; only
    # required columns quarantine the row (and, through unknown_customer_id,
    # everything else of that customer).
    issues = {}
    for col in spec.columns:
        if col.required or col.name not in present or col.kind == TEXT:
            continue
        whens = [f"WHEN {failure(col)} THEN '{'non_numeric_value' if col.kind == NUM else 'unparsable_date'}'"]
        if col.nonnegative:
            whens.append(f"WHEN t.{col.name} < 0 THEN 'negative_value'")
        issues[col.name] = f"CASE {' '.join(whens)} END"

    # Rows loaded after the as-of date (or, without loaded_at, whose event is
    # after it) belong to later runs. A future-dated row that was already
    # loaded is in scope and gets quarantined as future_date.
    event = f"t.{spec.event_column}"
    scope = f"({event} IS NULL OR {event} < :cutoff_ts)"
    if has_loaded_at:
        scope = f"(CASE WHEN t._loaded_at IS NOT NULL THEN t._loaded_at < :cutoff_ts ELSE {scope} END)"
    # DuckDB groups by a 64-bit hash of the key instead of the key's strings
    # (6.2M order ids at 480,000 customers): a hash shared by different keys
    # only flags a few extra rows, which the exact ranking below keeps.
    if dialect == "duckdb":
        dup_group = f"HASH({', '.join(spec.key)}) AS _dup_key"
        dup_on = f"d._dup_key = HASH({', '.join(f't.{k}' for k in spec.key)})"
    else:
        dup_group = f"{', '.join(spec.key)}, COUNT(*) AS _dup_key"
        dup_on = " AND ".join(f"d.{k} = t.{k}" for k in spec.key)
    join = ""
    if spec.references_identity:
        join = (
            "LEFT JOIN (SELECT DISTINCT source_system, source_id FROM stg_identity_records "
            "WHERE as_of_date = :as_of_date) ids "
            "ON ids.source_system = t.source_system AND ids.source_id = t.source_id"
        )
    # The source key is built only for the rows that need it (quarantine, field
    # issues), not for every row of the table.
    key_expr = " || '|' || ".join(f"COALESCE({as_text(k, '')}, 'NULL')" for k in spec.key)
    key_partition = ", ".join(f"t.{k}" for k in spec.key)
    order_cols = ", ".join(as_text(c.name) for c in spec.columns)
    data_cols = [c.name for c in spec.columns]
    chk = f"_chk_{spec.raw}"
    raw_cols = ", ".join(sorted(present))

    layer_sql = [f"l0 AS (SELECT {layers[0]} FROM (SELECT {raw_cols} FROM {spec.raw}) r)"]
    for i, exprs in enumerate(layers[1:], start=1):
        layer_sql.append(f"l{i} AS (SELECT {exprs} FROM l{i - 1})")
    layer_sql.append(f"typed AS (SELECT {', '.join(typed)} FROM l{len(layers) - 1})")
    kept = []
    for col in spec.columns:
        if col.name in issues:
            kept.append(f"CASE WHEN t.{col.name}__issue IS NULL THEN t.{col.name} END AS {col.name}")
            kept.append(f"t.{col.name}__issue")
        else:
            kept.append(f"t.{col.name}")
        if col.kind != TEXT:
            kept.append(f"t.{col.name}__raw")
    # The detail repeats the first failing rule's test for the few failing rows
    # only, instead of every rule for every row.
    detail = f"CASE WHEN t._reason IS NOT NULL THEN CASE {' '.join(details)} END END AS _detail"
    kept += [f"t.{name}" for name in extra_ids] + ["t._loaded_at", "t._reason", detail]
    issue_cols = "".join(f",\n        {expr} AS {name}__issue" for name, expr in issues.items())

    create = f"""
CREATE TEMPORARY TABLE {chk} AS
WITH {(','+chr(10)).join(layer_sql)},
reasoned AS (
    SELECT t.*,
        CASE {" ".join(reasons)} ELSE NULL END AS _reason{issue_cols}
    FROM typed t
    {join}
    WHERE {scope}
)
SELECT {", ".join(kept)},
    CASE WHEN d._dup_key IS NOT NULL AND t._reason IS NULL THEN 1 ELSE 0 END AS _dup
FROM reasoned t
LEFT JOIN (
    SELECT {dup_group} FROM reasoned WHERE _reason IS NULL
    GROUP BY {", ".join(str(i + 1) for i in range(len(spec.key) if dialect != "duckdb" else 1))}
    HAVING COUNT(*) > 1
) d ON {dup_on}"""
    # Duplicate keys are rare: a hash aggregate flags them above, and only the
    # flagged rows are ranked (the first copy by loaded_at, then raw values,
    # is kept), instead of sorting every row by key in a window.
    chk_cols = [c.split(" AS ")[-1].removeprefix("t.") for c in kept] + ["_dup"]
    ranked = f"_dup_{spec.raw}"
    dedupe = {
        "dup_drop": f"DROP TABLE IF EXISTS {ranked}",
        "dup_rank": (
            f"CREATE TEMPORARY TABLE {ranked} AS SELECT {', '.join(chk_cols)}, ROW_NUMBER() OVER ("
            f"PARTITION BY {key_partition} ORDER BY t._loaded_at, {order_cols}) AS _dup_rank "
            f"FROM {chk} t WHERE t._dup = 1"
        ),
        "dup_delete": f"DELETE FROM {chk} WHERE _dup = 1",
        "dup_insert": (
            f"INSERT INTO {chk} ({', '.join(chk_cols)}) SELECT "
            + ", ".join(
                "CASE WHEN _dup_rank > 1 THEN 'duplicate_key' ELSE _reason END" if c == "_reason"
                else f"CASE WHEN _dup_rank > 1 THEN 'key=' || {key_expr} ELSE _detail END" if c == "_detail"
                else c
                for c in chk_cols
            )
            + f" FROM {ranked}"
        ),
    }
    insert_staged = (
        f"INSERT INTO {spec.staged} (as_of_date, {', '.join(data_cols)}) "
        f"SELECT CAST(:as_of_date AS DATE), {', '.join(data_cols)} FROM {chk} WHERE _reason IS NULL"
    )
    insert_quarantine = (
        "INSERT INTO quarantine (as_of_date, source_table, source_key, reason, detail) "
        f"SELECT CAST(:as_of_date AS DATE), '{spec.raw}', {key_expr}, _reason, _detail "
        f"FROM {chk} WHERE _reason IS NOT NULL"
    )
    counts = (
        f"SELECT COUNT(*) AS in_scope, "
        f"SUM(CASE WHEN _reason IS NULL THEN 1 ELSE 0 END) AS staged, "
        f"(SELECT COUNT(*) FROM {spec.raw}) AS raw_total FROM {chk}"
    )
    sql = {
        "create": create,
        **dedupe,
        "delete_staged": f"DELETE FROM {spec.staged} WHERE as_of_date = :as_of_date",
        "insert_staged": insert_staged,
        "delete_quarantine": (
            f"DELETE FROM quarantine WHERE as_of_date = :as_of_date AND source_table = '{spec.raw}'"
        ),
        "insert_quarantine": insert_quarantine,
        "delete_field_issues": (
            f"DELETE FROM field_issues WHERE as_of_date = :as_of_date AND source_table = '{spec.raw}'"
        ),
        "counts": counts,
        "drop": f"DROP TABLE IF EXISTS {chk}",
    }
    if issues:
        sql["insert_field_issues"] = (
            "INSERT INTO field_issues (as_of_date, source_table, source_key, column_name, reason, detail) "
            + " UNION ALL ".join(
                f"SELECT CAST(:as_of_date AS DATE), '{spec.raw}', {key_expr}, '{name}', {name}__issue, "
                f"'{name}=' || {as_text(name, '')} FROM {chk} WHERE _reason IS NULL AND {name}__issue IS NOT NULL"
                for name in issues
            )
        )
    if spec.raw == "raw_identity_records":
        sql["delete_identifiers"] = "DELETE FROM stg_identity_identifiers WHERE as_of_date = :as_of_date"
        if extra_ids:
            sql["insert_identifiers"] = (
                "INSERT INTO stg_identity_identifiers (as_of_date, source_system, source_id, id_type, id_value) "
                + " UNION ALL ".join(
                    f"SELECT CAST(:as_of_date AS DATE), source_system, source_id, "
                    f"'{name[len(EXTRA_ID_PREFIX):]}', {name} FROM {chk} "
                    f"WHERE _reason IS NULL AND {name} IS NOT NULL"
                    for name in extra_ids
                )
            )
    return sql


#: Statements that replace this date's rows, in order (absent keys are skipped).
_WRITE_STEPS = (
    "delete_staged", "insert_staged", "delete_quarantine", "insert_quarantine",
    "delete_field_issues", "insert_field_issues", "delete_identifiers", "insert_identifiers",
)


@dataclass
class TableReport:
    table: str
    rows_in_scope: int
    rows_staged: int
    rows_quarantined: int
    rows_after_as_of: int
    present: bool = True
    fields_nulled: int = 0

    @property
    def bad_share(self) -> float:
        return self.rows_quarantined / self.rows_in_scope if self.rows_in_scope else 0.0


def run_boundaries(as_of_date: dt.date) -> dict[str, object]:
    """Bind parameters shared by every as-of query: the date and its exclusive cutoff."""
    cutoff = dt.datetime.combine(as_of_date + dt.timedelta(days=1), dt.time())
    return {"as_of_date": as_of_date, "cutoff_ts": cutoff}


def check_contract(wh: Warehouse, types: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, set[str]]:
    """Check every raw table against the contract; return the columns each one has.

    ``types`` is :func:`raw_column_types` when the caller already has it (one
    catalogue query instead of reflecting the tables one by one).

    Raises
    ------
    WarehouseError
        A required table, or a required column of a present table, is missing.
    """
    present: dict[str, set[str]] = {}
    types = raw_column_types(wh) if types is None else types
    for spec in TABLE_SPECS:
        cols = list(types[spec.raw]) if spec.raw in types else None
        if cols is None:
            if spec.required:
                raise WarehouseError(
                    f"required raw table '{spec.raw}' is missing from the warehouse "
                    f"(expected columns: {', '.join(spec.required_columns)})"
                )
            continue
        missing = [c for c in spec.required_columns if c not in cols]
        if missing:
            raise WarehouseError(
                f"raw table '{spec.raw}' lacks required column(s): {', '.join(missing)}"
            )
        known = {c.name for c in spec.columns} | {"loaded_at"}
        if spec.raw == "raw_identity_records":
            bad = [c for c in extra_identifier_columns(set(cols)) if not _EXTRA_ID_NAME.match(c)]
            if bad:
                raise WarehouseError(
                    f"raw table '{spec.raw}' has extra identifier column(s) {', '.join(bad)}: "
                    "an id_* column name may hold only lower-case letters, digits and '_'"
                )
            known |= set(extra_identifier_columns(set(cols)))
        present[spec.raw] = set(cols) & known
    return present


def extract_and_validate(
    wh: Warehouse, as_of_date: dt.date, *, max_bad_share: float = 0.05, retention_runs: int = 4,
    date_order: str = "ISO",
) -> list[TableReport]:
    """Validate every raw table for ``as_of_date`` into staging and quarantine.

    Returns one report per contract table. Raises :class:`BadDataError`
    (after writing everything, so the quarantine can be inspected) when a
    table's quarantined share exceeds ``max_bad_share``. Invalid optional
    values are nulled and listed in ``field_issues``; they never count as
    bad rows. ``date_order`` is passed to :func:`build_validation_sql`.
    """
    wh.ensure_schema()
    types = raw_column_types(wh)
    present = check_contract(wh, types)
    params = run_boundaries(as_of_date)
    reports: list[TableReport] = []
    # One transaction for every table of the date (staging, quarantine, field issues, the log, the pruning):
    # a reader sees the old date or the new one, never one table re-extracted and the next not.
    # On Snowflake a DDL statement commits the open transaction, so the work tables are created (empty)
    # before the first write, filled with INSERT (DML) inside the transaction, and dropped after the last.
    work = {spec.raw: _WorkTables(build_validation_sql(spec, present[spec.raw], dialect=wh.dialect,
                                                       date_order=date_order, types=types.get(spec.raw)),
                                  dialect=wh.dialect)
            for spec in TABLE_SPECS if spec.raw in present}
    with wh.transaction() as tx, tx.begin() as conn:
        for w in work.values():
            w.create_empty(conn, params)
        for spec in TABLE_SPECS:
            if spec.raw not in work:
                conn.execute(sa.text(f"DELETE FROM {spec.staged} WHERE as_of_date = :as_of_date"), params)
                conn.execute(sa.text("DELETE FROM field_issues WHERE as_of_date = :as_of_date "
                                     "AND source_table = :t"), {**params, "t": spec.raw})
                reports.append(TableReport(spec.raw, 0, 0, 0, 0, present=False))
                log.info("optional table %s is absent; its features will be empty", spec.raw)
                continue
            w = work[spec.raw]
            w.fill(conn, params)
            for step in _WRITE_STEPS:
                if step in w.sql:
                    conn.execute(sa.text(w.sql[step]), params)
            in_scope, staged, raw_total = conn.execute(sa.text(w.sql["counts"])).one()
            nulled = conn.execute(
                sa.text("SELECT COUNT(*) FROM field_issues WHERE as_of_date = :as_of_date AND source_table = :t"),
                {**params, "t": spec.raw},
            ).scalar()
            w.empty(conn)
            in_scope, staged, raw_total = int(in_scope or 0), int(staged or 0), int(raw_total or 0)
            reports.append(
                TableReport(spec.raw, in_scope, staged, in_scope - staged, raw_total - in_scope,
                            fields_nulled=int(nulled or 0))
            )
        _write_extract_log(tx, as_of_date, reports)
        _prune_staging(tx, as_of_date, retention_runs)
        for w in work.values():  # the last statements (on Snowflake the first DROP commits the writes)
            w.drop(conn)
    for r in reports:
        log.info(
            "%s: %d in scope, %d staged, %d quarantined (%.2f%%), %d after the as-of date, "
            "%d optional values nulled (field_issues)",
            r.table, r.rows_in_scope, r.rows_staged, r.rows_quarantined, 100 * r.bad_share,
            r.rows_after_as_of, r.fields_nulled,
        )
    too_bad = [r for r in reports if r.bad_share > max_bad_share]
    if too_bad:
        reasons = wh.query_df(
            "SELECT source_table, reason, COUNT(*) AS n FROM quarantine WHERE as_of_date = :as_of_date "
            "GROUP BY source_table, reason ORDER BY n DESC",
            params,
        )
        raise BadDataError(
            "quarantined share above max_bad_share="
            f"{max_bad_share:.2%}: "
            + "; ".join(f"{r.table} {r.bad_share:.2%}" for r in too_bad)
            + ". Reasons: "
            + ", ".join(f"{t}.{reason}={n}" for t, reason, n in reasons.itertuples(index=False))
        )
    return reports


_CTAS = re.compile(r"\s*CREATE TEMPORARY TABLE (\w+) AS\s+(.*)$", re.S)


class _WorkTables:
    """The checked and the duplicate-ranked work tables of one raw table, as DDL and DML kept apart.

    ``build_validation_sql`` gives them as ``CREATE TEMPORARY TABLE ... AS
    SELECT``; here each becomes an empty table created before the stage's
    first write and an ``INSERT ... SELECT`` inside its transaction.

    Not on DuckDB, where DDL is transactional and needs no such care: there each
    work table is created from its query (``CREATE ... AS SELECT``) when it is
    filled. DuckDB 2.0.0 loses the rows of a parallel ``INSERT ... SELECT`` into
    a table created empty in the same transaction once they span more than one
    row group (122,880 rows): the transaction's later reads see none of them
    (committed, they reappear). Measured here: at 480,000 customers every large
    raw table staged 0 rows and ``resolve_identity`` failed; tables under one
    row group (the demo's) were unaffected.
    """

    def __init__(self, sql: dict[str, str], dialect: str = "duckdb") -> None:
        self.sql = sql
        self.create_when_filled = dialect == "duckdb"
        self.tables = []
        for step in ("create", "dup_rank"):
            m = _CTAS.match(sql[step])
            if not m:
                raise ValueError(f"validation SQL step {step!r} is not a CREATE TEMPORARY TABLE ... AS query")
            self.tables.append((m.group(1), m.group(2)))

    def create_empty(self, conn: sa.Connection, params: dict[str, object]) -> None:
        for name, query in self.tables:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
            if not self.create_when_filled:
                conn.execute(sa.text(f"CREATE TEMPORARY TABLE {name} AS SELECT * FROM ({query}) q WHERE 1 = 0"),
                             params)

    def fill(self, conn: sa.Connection, params: dict[str, object]) -> None:
        (checked, check_query), (ranked, rank_query) = self.tables
        if self.create_when_filled:
            conn.execute(sa.text(f"CREATE TEMPORARY TABLE {checked} AS SELECT * FROM ({check_query}) q"), params)
            conn.execute(sa.text(f"CREATE TEMPORARY TABLE {ranked} AS SELECT * FROM ({rank_query}) q"))
        else:
            conn.execute(sa.text(f"INSERT INTO {checked} SELECT * FROM ({check_query}) q"), params)
            conn.execute(sa.text(f"INSERT INTO {ranked} SELECT * FROM ({rank_query}) q"))
        conn.execute(sa.text(self.sql["dup_delete"]))
        conn.execute(sa.text(self.sql["dup_insert"]))

    def empty(self, conn: sa.Connection) -> None:
        for name, _ in self.tables:
            conn.execute(sa.text(f"DROP TABLE {name}" if self.create_when_filled else f"DELETE FROM {name}"))

    def drop(self, conn: sa.Connection) -> None:
        for name, _ in self.tables:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


def _write_extract_log(wh: Warehouse, as_of_date: dt.date, reports: list[TableReport]) -> None:
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "as_of_date": as_of_date,
                "source_table": r.table,
                "rows_in_scope": r.rows_in_scope,
                "rows_staged": r.rows_staged,
                "rows_quarantined": r.rows_quarantined,
                "rows_after_as_of": r.rows_after_as_of,
                "fields_nulled": r.fields_nulled,
            }
            for r in reports
        ]
    )
    wh.replace_partition("extract_log", frame, {"as_of_date": as_of_date})


def _prune_staging(wh: Warehouse, as_of_date: dt.date, retention_runs: int) -> None:
    """Drop staged rows of all but the newest ``retention_runs`` dates up to this one.

    Staging is a work area: features, segments and the quarantine keep their
    full history; staging only has to serve re-runs of recent dates.
    """
    dates = wh.query_df(
        "SELECT DISTINCT as_of_date FROM stg_orders WHERE as_of_date <= :as_of_date "
        "ORDER BY as_of_date DESC",
        {"as_of_date": as_of_date},
    )["as_of_date"].tolist()
    stale = dates[retention_runs:]
    if not stale:
        return
    oldest_kept = min(dates[:retention_runs])
    with wh.begin() as conn:
        for staged in [spec.staged for spec in TABLE_SPECS] + ["stg_identity_identifiers"]:
            conn.execute(
                sa.text(f"DELETE FROM {staged} WHERE as_of_date < :oldest"), {"oldest": oldest_kept}
            )
