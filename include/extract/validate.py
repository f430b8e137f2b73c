"""Extract and validate raw CDP tables into as-of-date staging tables.

The input contract (README, "Input contract") is declared here as
:data:`TABLE_SPECS`. For each raw table the stage generates one SQL script
(warehouse-side, DuckDB and Snowflake alike) that

1. types every column with ``TRY_CAST`` (raw CDP exports are often text);
2. keeps the rows *in scope* for the run: loaded on or before the as-of date
   when the table has ``loaded_at``, else with an event time on or before it;
3. gives every in-scope row at most one reason, first failing rule wins:
   ``missing_required_value``, ``unparsable_date``, ``non_numeric_value``,
   ``negative_value``, ``future_date`` (event after its own ``loaded_at``),
   ``unknown_customer_id`` (no identity record), ``duplicate_key``;
4. writes clean rows to the staging table and the others to ``quarantine``
   with the reason and the offending value, replacing this date's rows.

Every in-scope row lands in exactly one of staging or quarantine, so nothing
is silently dropped; rows after the as-of date are counted in ``extract_log``.
"""

from __future__ import annotations

import datetime as dt
import logging
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
)


def _text(col: str) -> str:
    return f"NULLIF(TRIM(CAST({col} AS VARCHAR)), '')"


def _try_timestamp(expr: str) -> str:
    # The date guard makes the cast NULL-safe on fakesnow too, whose TRY_CAST to
    # TIMESTAMP raises on unparsable text; on DuckDB and Snowflake it is a no-op.
    return f"CASE WHEN TRY_CAST(SUBSTR({expr}, 1, 10) AS DATE) IS NOT NULL THEN TRY_CAST({expr} AS TIMESTAMP) END"


def build_validation_sql(spec: TableSpec, present: set[str]) -> dict[str, str]:
    """Return the SQL statements that validate ``spec.raw`` into staging and quarantine.

    ``present`` is the set of columns the raw table has; absent optional
    columns become typed NULLs. Bind parameters: ``:as_of_date`` (DATE) and
    ``:cutoff_ts`` (exclusive upper bound, the start of the next day).
    """
    typed, reasons, details = [], [], []
    for col in spec.columns:
        name = col.name
        if name not in present:
            typed.append(f"CAST(NULL AS {_SQL_TYPE[col.kind]}) AS {name}")
            typed.append(f"CAST(NULL AS VARCHAR) AS {name}__raw")
            continue
        typed.append(f"{_text(name)} AS {name}__raw")
        if col.kind == TEXT:
            typed.append(f"{_text(name)} AS {name}")
        elif col.kind == TS:
            typed.append(f"{_try_timestamp(_text(name))} AS {name}")
        else:
            typed.append(f"TRY_CAST({_text(name)} AS {_SQL_TYPE[col.kind]}) AS {name}")
    has_loaded_at = "loaded_at" in present
    typed.append(
        f"{_try_timestamp(_text('loaded_at'))} AS _loaded_at"
        if has_loaded_at
        else "CAST(NULL AS TIMESTAMP) AS _loaded_at"
    )

    def add(condition: str, reason: str, column: str) -> None:
        reasons.append(f"WHEN {condition} THEN '{reason}'")
        details.append(f"WHEN {condition} THEN '{column}=' || COALESCE(t.{column}__raw, 'NULL')")

    for col in spec.columns:
        if col.required:
            add(f"t.{col.name}__raw IS NULL", "missing_required_value", col.name)
    for col in spec.columns:
        if col.kind in (TS, DATE) and col.name in present:
            add(f"t.{col.name}__raw IS NOT NULL AND t.{col.name} IS NULL", "unparsable_date", col.name)
    for col in spec.columns:
        if col.kind == NUM and col.name in present:
            add(f"t.{col.name}__raw IS NOT NULL AND t.{col.name} IS NULL", "non_numeric_value", col.name)
    for col in spec.columns:
        if col.nonnegative and col.name in present:
            add(f"t.{col.name} < 0", "negative_value", col.name)
    if has_loaded_at:
        add(f"t._loaded_at IS NOT NULL AND t.{spec.event_column} > t._loaded_at",
            "future_date", spec.event_column)
    if spec.references_identity:
        add("ids.source_id IS NULL", "unknown_customer_id", "source_id")

    # Rows loaded after the as-of date (or, without loaded_at, whose event is
    # after it) belong to later runs. A future-dated row that was already
    # loaded is in scope and gets quarantined as future_date.
    event = f"t.{spec.event_column}"
    scope = f"({event} IS NULL OR {event} < :cutoff_ts)"
    if has_loaded_at:
        scope = f"(CASE WHEN t._loaded_at IS NOT NULL THEN t._loaded_at < :cutoff_ts ELSE {scope} END)"
    join = ""
    if spec.references_identity:
        join = (
            "LEFT JOIN (SELECT DISTINCT source_system, source_id FROM stg_identity_records "
            "WHERE as_of_date = :as_of_date) ids "
            "ON ids.source_system = t.source_system AND ids.source_id = t.source_id"
        )
    key_expr = " || '|' || ".join(f"COALESCE(t.{k}__raw, 'NULL')" for k in spec.key)
    key_partition = ", ".join(f"t.{k}" for k in spec.key)
    order_cols = ", ".join(f"t.{c.name}__raw" for c in spec.columns)
    data_cols = [c.name for c in spec.columns]
    chk = f"_chk_{spec.raw}"
    raw_cols = ", ".join(sorted(present))

    create = f"""
CREATE TEMPORARY TABLE {chk} AS
WITH typed AS (
    SELECT {", ".join(typed)}
    FROM (SELECT {raw_cols} FROM {spec.raw}) r
), reasoned AS (
    SELECT t.*,
        {key_expr} AS _source_key,
        CASE {" ".join(reasons)} ELSE NULL END AS _reason,
        CASE {" ".join(details)} ELSE NULL END AS _detail
    FROM typed t
    {join}
    WHERE {scope}
)
SELECT t.*,
    CASE WHEN t._reason IS NULL THEN ROW_NUMBER() OVER (
        PARTITION BY {key_partition}, CASE WHEN t._reason IS NULL THEN 1 ELSE 0 END
        ORDER BY t._loaded_at, {order_cols}
    ) END AS _dup_rank
FROM reasoned t"""
    finalize = f"""
UPDATE {chk} SET _reason = 'duplicate_key',
    _detail = 'key=' || _source_key
WHERE _reason IS NULL AND _dup_rank > 1"""
    insert_staged = (
        f"INSERT INTO {spec.staged} (as_of_date, {', '.join(data_cols)}) "
        f"SELECT CAST(:as_of_date AS DATE), {', '.join(data_cols)} FROM {chk} WHERE _reason IS NULL"
    )
    insert_quarantine = (
        "INSERT INTO quarantine (as_of_date, source_table, source_key, reason, detail) "
        f"SELECT CAST(:as_of_date AS DATE), '{spec.raw}', _source_key, _reason, _detail "
        f"FROM {chk} WHERE _reason IS NOT NULL"
    )
    counts = (
        f"SELECT COUNT(*) AS in_scope, "
        f"SUM(CASE WHEN _reason IS NULL THEN 1 ELSE 0 END) AS staged, "
        f"(SELECT COUNT(*) FROM {spec.raw}) AS raw_total FROM {chk}"
    )
    return {
        "create": create,
        "finalize": finalize,
        "delete_staged": f"DELETE FROM {spec.staged} WHERE as_of_date = :as_of_date",
        "insert_staged": insert_staged,
        "delete_quarantine": (
            f"DELETE FROM quarantine WHERE as_of_date = :as_of_date AND source_table = '{spec.raw}'"
        ),
        "insert_quarantine": insert_quarantine,
        "counts": counts,
        "drop": f"DROP TABLE IF EXISTS {chk}",
    }


@dataclass
class TableReport:
    table: str
    rows_in_scope: int
    rows_staged: int
    rows_quarantined: int
    rows_after_as_of: int
    present: bool = True

    @property
    def bad_share(self) -> float:
        return self.rows_quarantined / self.rows_in_scope if self.rows_in_scope else 0.0


def run_boundaries(as_of_date: dt.date) -> dict[str, object]:
    """Bind parameters shared by every as-of query: the date and its exclusive cutoff."""
    cutoff = dt.datetime.combine(as_of_date + dt.timedelta(days=1), dt.time())
    return {"as_of_date": as_of_date, "cutoff_ts": cutoff}


def check_contract(wh: Warehouse) -> dict[str, set[str]]:
    """Check every raw table against the contract; return the columns each one has.

    Raises
    ------
    WarehouseError
        A required table, or a required column of a present table, is missing.
    """
    present: dict[str, set[str]] = {}
    for spec in TABLE_SPECS:
        cols = wh.table_columns(spec.raw)
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
        present[spec.raw] = set(cols) & ({c.name for c in spec.columns} | {"loaded_at"})
    return present


def extract_and_validate(
    wh: Warehouse, as_of_date: dt.date, *, max_bad_share: float = 0.05, retention_runs: int = 4
) -> list[TableReport]:
    """Validate every raw table for ``as_of_date`` into staging and quarantine.

    Returns one report per contract table. Raises :class:`BadDataError`
    (after writing everything, so the quarantine can be inspected) when a
    table's quarantined share exceeds ``max_bad_share``.
    """
    wh.ensure_schema()
    present = check_contract(wh)
    params = run_boundaries(as_of_date)
    reports: list[TableReport] = []
    for spec in TABLE_SPECS:
        if spec.raw not in present:
            with wh.begin() as conn:
                conn.execute(sa.text(f"DELETE FROM {spec.staged} WHERE as_of_date = :as_of_date"), params)
            reports.append(TableReport(spec.raw, 0, 0, 0, 0, present=False))
            log.info("optional table %s is absent; its features will be empty", spec.raw)
            continue
        sql = build_validation_sql(spec, present[spec.raw])
        with wh.begin() as conn:
            conn.execute(sa.text(sql["drop"]))
            conn.execute(sa.text(sql["create"]), params)
            conn.execute(sa.text(sql["finalize"]))
            for step in ("delete_staged", "insert_staged", "delete_quarantine", "insert_quarantine"):
                conn.execute(sa.text(sql[step]), params)
            in_scope, staged, raw_total = conn.execute(sa.text(sql["counts"])).one()
            conn.execute(sa.text(sql["drop"]))
        in_scope, staged, raw_total = int(in_scope or 0), int(staged or 0), int(raw_total or 0)
        reports.append(
            TableReport(spec.raw, in_scope, staged, in_scope - staged, raw_total - in_scope)
        )
    _write_extract_log(wh, as_of_date, reports)
    _prune_staging(wh, as_of_date, retention_runs)
    for r in reports:
        log.info(
            "%s: %d in scope, %d staged, %d quarantined (%.2f%%), %d after the as-of date",
            r.table, r.rows_in_scope, r.rows_staged, r.rows_quarantined, 100 * r.bad_share,
            r.rows_after_as_of,
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
        for spec in TABLE_SPECS:
            conn.execute(
                sa.text(f"DELETE FROM {spec.staged} WHERE as_of_date < :oldest"), {"oldest": oldest_kept}
            )
