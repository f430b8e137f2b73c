"""Extract and validate raw CDP tables into as-of-date staging tables.

The input contract (docs/input.md) is declared here as
:data:`TABLE_SPECS`. For each raw table the stage renders one SQL script,
``include/sql/validate.sql`` (a Jinja template; the parsing expressions are
macros in ``include/sql/validate_parse.sql``), that runs warehouse-side on
DuckDB and Snowflake alike and

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

Here: the contract, which columns each table has and how the warehouse types them
(:func:`validation_context`, what the template is rendered with), the order of the
statements inside one transaction, and the counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import jinja2
import pandas as pd
import sqlalchemy as sa

from include.runtime.errors import BadDataError, WarehouseError
from include.runtime.settings import BY_NAME, SettingsError
from include.runtime.warehouse import Warehouse, load_sql, parse_named_sql

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
    #: The event may not precede its customer record's ``created_at`` (by more than the grace days).
    checks_creation: bool = False
    #: Money columns whose staged values are flagged when far above the shop's typical value.
    flag_outliers: tuple[str, ...] = ()

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
        checks_creation=True,
        flag_outliers=("amount",),
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
    # Returns and cancellations as their own rows (a cancellation invoice, a refund): the
    # returned amount (positive) and, where the export has it, the order returned. Extract
    # matches each to the customer's orders (include/sql/validate_money.sql) and adds it to
    # their returned_amount; what cannot be matched is reported, never subtracted.
    TableSpec(
        raw="raw_returns",
        staged="stg_returns",
        columns=(Column("return_id", required=True),)
        + _ID_COLUMNS
        + (Column("return_ts", TS, required=True), Column("amount", NUM, required=True, nonnegative=True),
           Column("order_id")),
        key=("return_id",),
        event_column="return_ts",
        checks_creation=True,
        flag_outliers=("amount",),
    ),
)
SPECS_BY_RAW: dict[str, TableSpec] = {spec.raw: spec for spec in TABLE_SPECS}
#: Why a raw table's rows are most likely quarantined, by (table or '*', reason): the
#: quarantine-share error names the cause and the fix beside the counts.
LIKELY_CAUSES: dict[tuple[str, str], str] = {
    ("raw_orders", "duplicate_key"): "duplicate order keys: are these invoice lines? set group_lines_by in the "
                                     "mapping (one order per key, amount = sum of quantity x price)",
    ("raw_identity_records", "duplicate_key"): "duplicate (source_system, source_id): one row per order or line? "
                                               "derive the customer table from the orders (derive = \"orders\")",
    ("*", "duplicate_key"): "duplicate keys: one row per event expected; is a key column missing from the mapping?",
    ("raw_orders", "unknown_customer_id"): "orders name customers without an identity record: are ids written "
                                           "differently in the two files (17850.0 vs 17850: strip_suffix)? no "
                                           "customer table: derive it from the orders",
    ("*", "unknown_customer_id"): "rows name customers without a staged identity record (ids written differently, "
                                  "or their record was quarantined)",
    ("*", "missing_required_value"): "required values are empty: rows without a customer (guests) are left out "
                                     "by the mapping's guest rule, or a column is mapped to the wrong source column",
    ("*", "unparsable_date"): "dates in an unread layout: set date_format in the mapping, or the date_order setting",
    ("*", "non_numeric_value"): "numbers that do not parse: a decimal comma (decimal = \",\"), currency signs, or "
                                "NaN/inf",
    ("raw_orders", "negative_value"): "negative amounts: cancellations or returns? map them to raw_returns "
                                      "(group_lines_by with returns splits them off)",
    ("*", "negative_value"): "negative values where only positive ones make sense",
    ("*", "value_above_bound"): "values above max_amount: a unit (cents), an overflow or a placeholder such as 1e308",
    ("*", "date_before_business_start"): "dates before business_start_date: placeholders such as 0001-01-01 or "
                                         "1900-01-01, or a wrong date_format",
    ("*", "before_customer_created"): "events dated before their customer's created_at: if created_at is an import "
                                      "date, set created_at_grace_days empty (no check)",
    ("*", "future_date"): "events dated after they were loaded (loaded_at): a time zone or date_format mistake",
}


#: Accepted values of the ``date_order`` setting: which day/month order a
#: date written with separators and a four-digit year last is read in.
DATE_ORDERS = ("ISO", "DMY", "MDY")

#: Prefix of the extra identifier columns of ``raw_identity_records``.
EXTRA_ID_PREFIX = "id_"
_EXTRA_ID_NAME = re.compile(r"^id_[a-z0-9_]+$")


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
    types: Mapping[str, str] | None = None, check_creation: bool = True,
) -> dict[str, str]:
    """Return the SQL statements that validate ``spec.raw`` into staging and quarantine.

    The statements are ``include/sql/validate.sql`` (a Jinja template, with the parsing
    expressions in ``include/sql/validate_parse.sql``) rendered for this table.

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
    check_creation
        Whether events of a table with ``checks_creation`` are checked
        against their customer record's ``created_at``.

    Bind parameters: :func:`validation_params` (``:as_of_date``, ``:cutoff_ts``
    the exclusive upper bound, and the plausibility bounds). Statements whose
    key is absent from the result have nothing to do for this table.
    """
    context = validation_context(spec, present, dialect=dialect, date_order=date_order, types=types,
                                 check_creation=check_creation)
    return render_named_sql("validate.sql", context)


def validation_context(
    spec: TableSpec, present: set[str], *, dialect: str = "duckdb", date_order: str = "ISO",
    types: Mapping[str, str] | None = None, check_creation: bool = True,
) -> dict[str, object]:
    """What ``validate.sql`` is rendered with for one raw table (see its header)."""
    if date_order not in DATE_ORDERS:
        raise SettingsError(f"date_order must be one of {', '.join(DATE_ORDERS)}, got {date_order!r}")
    types = {name.lower(): _base_type(kind) for name, kind in (types or {}).items()}
    has_loaded_at = "loaded_at" in present
    # Natively typed columns skip the text layers (at 480,000 customers the demo's
    # email activity alone is 9.8M typed dates and counts).
    columns = [
        {"name": c.name, "kind": c.kind, "sql_type": _SQL_TYPE[c.kind], "required": c.required,
         "nonnegative": c.nonnegative, "present": c.name in present,
         "native": c.name in present and c.kind != TEXT and types.get(c.name) in _NATIVE_TYPES[c.kind],
         "float_native": types.get(c.name) in _FLOAT_TYPES, "data_type": types.get(c.name)}
        for c in spec.columns
    ]
    loaded_at_native = has_loaded_at and types.get("loaded_at") in _NATIVE_TYPES[TS]
    parsed = [c["name"] for c in columns if c["present"] and c["kind"] in (TS, DATE) and not c["native"]]
    if has_loaded_at and not loaded_at_native:
        parsed.append("loaded_at")
    extra_ids = extra_identifier_columns(present) if spec.raw == "raw_identity_records" else []
    return {
        "dialect": dialect, "date_order": date_order, "raw": spec.raw, "staged": spec.staged,
        "key": list(spec.key), "event_column": spec.event_column,
        "references_identity": spec.references_identity, "columns": columns,
        "raw_columns": sorted(present), "has_loaded_at": has_loaded_at,
        "loaded_at_native": loaded_at_native, "loaded_at_type": types.get("loaded_at"),
        "parsed": parsed, "extra_ids": extra_ids, "extra_id_types": {n: types.get(n) for n in extra_ids},
        "identifiers_table": spec.raw == "raw_identity_records",
        "checks_creation": spec.checks_creation and check_creation,
    }


_TEMPLATES = jinja2.Environment(
    loader=jinja2.FunctionLoader(load_sql), undefined=jinja2.StrictUndefined, autoescape=False,
    keep_trailing_newline=True,
)


def render_named_sql(template: str, context: Mapping[str, object]) -> dict[str, str]:
    """The ``-- name:`` statements of the Jinja template ``include/sql/<template>`` rendered with ``context``."""
    return parse_named_sql(_TEMPLATES.get_template(template).render(**context), f"include/sql/{template}")


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
    rows_flagged: int = 0
    rows_total: int = 0

    @property
    def bad_share(self) -> float:
        return self.rows_quarantined / self.rows_in_scope if self.rows_in_scope else 0.0


def run_boundaries(as_of_date: dt.date) -> dict[str, object]:
    """Bind parameters shared by every as-of query: the date and its exclusive cutoff."""
    cutoff = dt.datetime.combine(as_of_date + dt.timedelta(days=1), dt.time())
    return {"as_of_date": as_of_date, "cutoff_ts": cutoff}


@dataclass(frozen=True)
class PlausibilityRules:
    """Bounds of plausible values (issue #31): the settings of the same names, defaults declared there.

    Attributes
    ----------
    business_start
        Events and records dated before it are quarantined (``date_before_business_start``).
    max_amount
        Amounts, costs and counts above it are quarantined (``value_above_bound``; an
        optional column is nulled and recorded in ``field_issues``).
    created_at_grace_days
        Orders and returns dated more than this many days before their customer
        record's ``created_at`` are quarantined (``before_customer_created``); ``None``:
        no check.
    outlier_log_mads
        Staged order and return amounts whose logarithm lies more than this many robust
        standard deviations (1.4826 x MAD) above the median are flagged in ``extract_flags``
        (kept: a statistical rule flags, it never drops).
    """

    business_start: dt.date = dt.date.fromisoformat(BY_NAME["business_start_date"].default)
    max_amount: float = BY_NAME["max_amount"].default
    created_at_grace_days: int | None = BY_NAME["created_at_grace_days"].default
    outlier_log_mads: float = BY_NAME["outlier_log_mads"].default

    @classmethod
    def from_settings(cls, settings: object) -> PlausibilityRules:
        """The rules of a run's :class:`~include.runtime.settings.PipelineSettings`."""
        return cls(business_start=dt.date.fromisoformat(str(settings.business_start_date)),
                   max_amount=float(settings.max_amount), created_at_grace_days=settings.created_at_grace_days,
                   outlier_log_mads=float(settings.outlier_log_mads))


def validation_params(as_of_date: dt.date, rules: PlausibilityRules | None = None) -> dict[str, object]:
    """Bind parameters of the validation statements: :func:`run_boundaries` plus the plausibility bounds."""
    rules = rules or PlausibilityRules()
    return {**run_boundaries(as_of_date),
            "business_start_ts": dt.datetime.combine(rules.business_start, dt.time()),
            "max_amount": float(rules.max_amount),
            "created_grace_minutes": int(rules.created_at_grace_days or 0) * 24 * 60,
            "outlier_log_mads": float(rules.outlier_log_mads)}


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


#: DuckDB's buffer limit for the extract's transaction (its default is 80% of the machine's memory). A
#: work table dropped inside a transaction keeps its memory until the commit (DuckDB must be able to
#: roll the drop back), so the check tables of every raw table added up: 5.4 GB at 480,000 persons.
#: Under this limit DuckDB writes them to its temporary directory (``<warehouse>.tmp``) instead:
#: 1.8 GB peak there, for the same CPU time (bench_extract.py, 2026-12-07).
DUCKDB_MEMORY_LIMIT = "1500MB"


class QuarantineShareError(BadDataError):
    """A raw table's quarantined share is above ``max_bad_share``; the message names the likely cause."""


class EmptyInputError(BadDataError):
    """A required raw table has no row to stage for the date."""


def extract_and_validate(
    wh: Warehouse, as_of_date: dt.date, *, max_bad_share: float = 0.05, retention_runs: int = 4,
    date_order: str = "ISO", rules: PlausibilityRules | None = None,
) -> list[TableReport]:
    """Validate every raw table for ``as_of_date`` into staging and quarantine.

    Returns one report per contract table. Invalid optional values are nulled
    and listed in ``field_issues``; they never count as bad rows. After every
    table is staged, the money rules of ``include/sql/validate_money.sql`` run
    (returns matched to orders, returned amounts capped, far-out amounts
    flagged in ``extract_flags``). ``date_order`` is passed to
    :func:`build_validation_sql`; ``rules`` are the plausibility bounds
    (default: the settings' defaults).

    Raises
    ------
    QuarantineShareError
        A table's quarantined share exceeds ``max_bad_share`` (raised after
        writing everything, so the quarantine can be inspected); the message
        gives the reasons and their likely cause.
    EmptyInputError
        A required table has no row in scope, or none left after quarantine.
    """
    rules = rules or PlausibilityRules()
    wh.ensure_schema()
    types = raw_column_types(wh)
    present = check_contract(wh, types)
    params = validation_params(as_of_date, rules)
    check_creation = rules.created_at_grace_days is not None
    reports: list[TableReport] = []
    # One transaction for every table of the date (staging, quarantine, field issues, the log, the pruning):
    # a reader sees the old date or the new one, never one table re-extracted and the next not.
    # On Snowflake a DDL statement commits the open transaction, so the work tables are created (empty)
    # before the first write, filled with INSERT (DML) inside the transaction, and dropped after the last.
    work = {spec.raw: _WorkTables(build_validation_sql(spec, present[spec.raw], dialect=wh.dialect,
                                                       date_order=date_order, types=types.get(spec.raw),
                                                       check_creation=check_creation),
                                  dialect=wh.dialect)
            for spec in TABLE_SPECS if spec.raw in present}
    money = money_sql(dialect=wh.dialect, has_returns="raw_returns" in present)
    with wh.transaction() as tx, tx.begin() as conn:
        if wh.dialect == "duckdb":  # see DUCKDB_MEMORY_LIMIT
            conn.exec_driver_sql(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
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
            in_scope, staged, raw_total, staged_written, quarantined_written = conn.execute(
                sa.text(w.sql["counts"]), params).one()
            _check_written(spec, as_of_date, int(staged or 0), int(in_scope or 0) - int(staged or 0),
                           int(staged_written or 0), int(quarantined_written or 0))
            nulled = conn.execute(
                sa.text("SELECT COUNT(*) FROM field_issues WHERE as_of_date = :as_of_date AND source_table = :t"),
                {**params, "t": spec.raw},
            ).scalar()
            w.empty(conn)
            in_scope, staged, raw_total = int(in_scope or 0), int(staged or 0), int(raw_total or 0)
            reports.append(
                TableReport(spec.raw, in_scope, staged, in_scope - staged, raw_total - in_scope,
                            fields_nulled=int(nulled or 0), rows_total=raw_total)
            )
        conn.execute(sa.text("DELETE FROM extract_flags WHERE as_of_date = :as_of_date"), params)
        for statement in money.values():
            conn.execute(sa.text(statement), params)
        flagged = dict(conn.execute(sa.text(
            "SELECT source_table, COUNT(DISTINCT source_key) FROM extract_flags WHERE as_of_date = :as_of_date "
            "GROUP BY source_table"), params).all())
        for r in reports:
            r.rows_flagged = int(flagged.get(r.table, 0))
        _write_extract_log(tx, as_of_date, reports)
        _prune_staging(tx, as_of_date, retention_runs)
        for w in work.values():  # the last statements (on Snowflake the first DROP commits the writes)
            w.drop(conn)
        if wh.dialect == "duckdb":  # a connection of this process opened beside this one shares the setting
            conn.exec_driver_sql("RESET memory_limit")
    for r in reports:
        log.info(
            "%s: %d in scope, %d staged, %d quarantined (%.2f%%), %d after the as-of date, "
            "%d optional values nulled (field_issues), %d flagged (extract_flags)",
            r.table, r.rows_in_scope, r.rows_staged, r.rows_quarantined, 100 * r.bad_share,
            r.rows_after_as_of, r.fields_nulled, r.rows_flagged,
        )
    too_bad = [r for r in reports if r.bad_share > max_bad_share]
    if too_bad:
        reasons = wh.query_df(
            "SELECT source_table, reason, COUNT(*) AS n FROM quarantine WHERE as_of_date = :as_of_date "
            "GROUP BY source_table, reason ORDER BY n DESC, source_table, reason",
            params,
        )
        raise QuarantineShareError(quarantine_share_message(too_bad, reasons, max_bad_share))
    empty = [r for r in reports if SPECS_BY_RAW[r.table].required and r.rows_staged == 0]
    if empty:
        raise EmptyInputError("; ".join(_empty_message(r, as_of_date) for r in empty))
    return reports


class StagedCountError(WarehouseError):
    """The date's staging or quarantine holds other than the rows the checks gave it (nothing is committed)."""


def _check_written(spec: TableSpec, as_of_date: dt.date, staged: int, quarantined: int,
                   staged_written: int, quarantined_written: int) -> None:
    """Fail when the warehouse holds other than the rows the check table gave staging and quarantine.

    Why: the 480k DAG's week-2 warehouse of 2026-12-07 held every ``stg_email_activity`` row of
    2026-11-14 twice (18,776,372 rows, 9,388,186 distinct keys) while ``extract_log`` said 9,388,186
    were staged; re-running the date wrote them once. Counting the date's rows costs a scan of the
    date column; raising here rolls the whole date back, so a reader never sees such a copy.
    """
    wrong = []
    if staged_written != staged:
        wrong.append(f"{spec.staged} holds {staged_written:,} rows for {as_of_date}, the checks staged {staged:,}")
    if quarantined_written != quarantined:
        wrong.append(f"quarantine holds {quarantined_written:,} rows of {spec.raw} for {as_of_date}, "
                     f"the checks quarantined {quarantined:,}")
    if wrong:
        raise StagedCountError("; ".join(wrong) + ": the warehouse wrote other than what it was given; "
                               "nothing of this date is committed")


def quarantine_share_message(too_bad: list[TableReport], reasons: pd.DataFrame, max_bad_share: float) -> str:
    """The quarantine-share error: shares, reasons with counts, and each table's likely cause."""
    parts = []
    for r in too_bad:
        mine = reasons[reasons["source_table"] == r.table]
        counts = ", ".join(f"{reason}={n:,}" for reason, n in zip(mine["reason"], mine["n"], strict=True))
        cause = ""
        if len(mine):
            top = mine.iloc[0]["reason"]
            hint = LIKELY_CAUSES.get((r.table, top)) or LIKELY_CAUSES.get(("*", top))
            if hint:
                cause = f"; likely cause ({top}): {hint}"
        parts.append(f"{r.table} {r.bad_share:.2%} of {r.rows_in_scope:,} rows ({counts}){cause}")
    return (f"quarantined share above max_bad_share={max_bad_share:.2%}: " + "; ".join(parts)
            + ". The quarantine table holds every row with its reason and value.")


def _empty_message(r: TableReport, as_of_date: dt.date) -> str:
    if r.rows_total == 0:
        return f"required table {r.table} is empty: nothing to segment (did the load write it?)"
    if r.rows_in_scope == 0:
        return (f"required table {r.table} has no row on or before the as-of date {as_of_date} "
                f"({r.rows_after_as_of:,} rows are later): is the as-of date before the data begins?")
    return f"required table {r.table}: all {r.rows_in_scope:,} rows in scope were quarantined"


def money_sql(*, dialect: str, has_returns: bool) -> dict[str, str]:
    """The statements of ``include/sql/validate_money.sql``, in order, for this warehouse."""
    outliers = [{"raw": spec.raw, "staged": spec.staged, "key": spec.key[0], "column": column}
                for spec in TABLE_SPECS for column in spec.flag_outliers
                if spec.raw != "raw_returns" or has_returns]
    return render_named_sql("validate_money.sql", {"dialect": dialect, "has_returns": has_returns,
                                                   "outliers": outliers})


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
        else:
            conn.execute(sa.text(f"INSERT INTO {checked} SELECT * FROM ({check_query}) q"), params)
        if "dup_flag" in self.sql:
            conn.execute(sa.text(self.sql["dup_flag"]))
        if self.create_when_filled:
            conn.execute(sa.text(f"CREATE TEMPORARY TABLE {ranked} AS SELECT * FROM ({rank_query}) q"))
        else:
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
                "rows_flagged": r.rows_flagged,
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
