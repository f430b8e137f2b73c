"""What to push to a CRM, and the bookkeeping that makes a push exactly-once and forward-only.

The pattern is the one reverse-ETL tools use (Hightouch, Segment Reverse ETL):
a per-target state table remembers, for each customer key, the checksum of
the fields last *acknowledged* by the target and the date of those labels. A
push sends only customers whose checksum differs (their published segment,
segment name, CLV tier, priority or action changed) or who were never
acknowledged, which includes every record the target rejected last time.

- The CRM only moves forward. A push for as-of date ``d`` sends the labels of
  the newest complete date ``L >= d`` (segments and priorities published,
  :func:`newest_label_date`), so re-running or backfilling an old date sends
  the newest labels' differences, never older content over newer. A customer
  whose acknowledged labels are newer than ``L`` is never sent.
- Every record carries a content key: a hash of the customer, the checksum of
  its fields, the label date and how many deliveries of this customer the
  target has acknowledged. A changed label therefore always has a new key (a
  receiver dropping repeated keys can never swallow it, even when a date is
  republished back and forth), while a resend of an unacknowledged record has
  the same key. A batch's idempotency key hashes its records' keys.
- Change detection, state updates and outbox writes are set-based SQL
  (``md5``/``concat_ws`` run unchanged on DuckDB and Snowflake): no per-row
  Python over the whole customer base.
- Only the id property and the segment fields leave the warehouse: no names,
  emails, phones or addresses (:data:`PUSH_FIELDS`).
- Holdouts (``customer_holdout``, written by the experiment stage) are sent
  with ``holdout = true`` and an empty ``segment_action``: the playbook action
  goes only to the treated. Once the experiment has run on a warehouse, a
  date counts as complete only when its holdout is recorded, so no push can
  send actions to customers whose holdout flag is not yet known.
- Batches are cut in customer-key order. After each batch the acknowledged
  keys go into ``crm_push_state`` and the batch into ``crm_push_log`` in one
  transaction, so a push killed mid-way resumes with the first
  unacknowledged batch, which has the same content and idempotency key as
  before (the acknowledged batches were a prefix of the same ordering).
  ``crm_push_log`` has one row per (target, idempotency key): a retried batch
  updates its row (attempts add up) instead of adding one.

Webhook signatures (:mod:`include.crm.signature`, re-exported here) sign
``"<t>.<idempotency key>.<raw body>"`` with HMAC-SHA256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from include.crm.signature import (  # noqa: F401 - re-exported: the push side signs with them
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    MalformedSignature,
    parse_signature,
    sign,
    verify_signature,
)
from include.runtime.warehouse import Warehouse, load_sql, parse_create_tables, split_statements

log = logging.getLogger(__name__)

#: The fields that leave the warehouse, besides the id property.
PUSH_FIELDS = ("segment_id", "segment_name", "clv_tier", "priority", "segment_action", "holdout")
TARGETS = ("outbox", "webhook", "hubspot", "salesforce")

LABELS_SQL = """
SELECT s.customer_key, s.segment_id, s.segment_name,
    CASE NTILE(4) OVER (ORDER BY c.clv_365d DESC, s.customer_key)
        WHEN 1 THEN 'A' WHEN 2 THEN 'B' WHEN 3 THEN 'C' ELSE 'D' END AS clv_tier,
    COALESCE(p.priority, 'unknown') AS priority,
    -- The playbook action goes to the treated only: a holdout customer is sent none.
    CASE WHEN h.holdout THEN '' ELSE COALESCE(p.action, '') END AS segment_action,
    COALESCE(h.holdout, FALSE) AS holdout
FROM customer_segments s
LEFT JOIN customer_clv c ON c.as_of_date = s.as_of_date AND c.customer_key = s.customer_key
LEFT JOIN customer_priority p ON p.as_of_date = s.as_of_date AND p.customer_key = s.customer_key
LEFT JOIN customer_holdout h ON h.as_of_date = s.as_of_date AND h.customer_key = s.customer_key
WHERE s.as_of_date = :label_date
"""

#: Checksum of the pushed fields (unit separator between them; NULL reads as '').
CHECKSUM_SQL = "md5(concat_ws(chr(31), " + ", ".join(
    f"COALESCE(CAST(l.{f} AS VARCHAR), '')" for f in PUSH_FIELDS) + "))"

#: Labels of ``:label_date`` the target has not acknowledged, with their content keys.
CHANGED_SQL = f"""
WITH l AS ({LABELS_SQL}),
labelled AS (SELECT l.*, {CHECKSUM_SQL} AS checksum FROM l)
SELECT l.*, COALESCE(st.deliveries, 0) AS deliveries_acked,
    md5(concat_ws('|', l.customer_key, l.checksum, :label_day,
                  CAST(COALESCE(st.deliveries, 0) AS VARCHAR))) AS record_key
FROM labelled l
LEFT JOIN crm_push_state st ON st.target = :target AND st.customer_key = l.customer_key
WHERE (st.checksum IS NULL OR st.checksum <> l.checksum)
  AND (st.as_of_date IS NULL OR st.as_of_date <= :label_date)
ORDER BY l.customer_key
"""

#: Customers whose acknowledged labels are newer than ``:label_date`` (never sent older content).
NEWER_DELIVERED_SQL = """
SELECT COUNT(*) FROM crm_push_state st JOIN customer_segments s
    ON s.as_of_date = :label_date AND s.customer_key = st.customer_key
WHERE st.target = :target AND st.as_of_date > :label_date
"""


CRM_TABLES = ("crm_push_state", "crm_push_log", "crm_outbox", "crm_push_pending")
#: Tables the label SQL reads that a push may have to create itself (an older warehouse).
LABEL_TABLES = ("customer_holdout",)


def ensure_crm_tables(wh: Warehouse) -> None:
    """Create the ``crm_*`` tables of ``schema.sql`` and add columns added since (one catalogue query).

    A push needs only these tables; checking them through the
    information schema takes ~0.1 s where inspecting the whole schema takes
    seconds on DuckDB.
    """
    script = load_sql("schema.sql")
    wanted = {t: cols for t, cols in parse_create_tables(script).items() if t in CRM_TABLES}
    creates = [stmt for stmt in split_statements(script)
               if any(stmt.startswith(f"CREATE TABLE IF NOT EXISTS {t} ") for t in (*wanted, *LABEL_TABLES))]
    wh.run_script(";\n".join(creates))
    have = wh.query_df("SELECT LOWER(table_name) AS t, LOWER(column_name) AS c FROM information_schema.columns "
                       "WHERE LOWER(table_name) LIKE 'crm_%'")
    present = set(zip(have["t"], have["c"], strict=True))
    missing = [(t, c, ty) for t, cols in wanted.items() for c, ty in cols if (t, c) not in present]
    if missing:
        wh.run_script(";\n".join(f"ALTER TABLE {t} ADD COLUMN {c} {ty}" for t, c, ty in missing))
        log.info("schema: added %s", ", ".join(f"{t}.{c}" for t, c, _ in missing))


def newest_label_date(wh: Warehouse, as_of_date: dt.date) -> dt.date:
    """The newest date ``>= as_of_date`` whose labels are complete (segments and priorities published).

    Raises
    ------
    ValueError
        When ``customer_segments``, ``customer_priority`` or ``customer_clv``
        does not exist, or the first two have no rows for ``as_of_date`` or
        any later date (nothing complete to push).
    """
    tables = set(wh.query_df("SELECT LOWER(table_name) AS t FROM information_schema.tables WHERE LOWER(table_name) "
                             "IN ('customer_segments', 'customer_priority', 'customer_clv', 'customer_holdout')")["t"])
    for table in ("customer_segments", "customer_priority", "customer_clv", "customer_holdout"):
        if table not in tables:
            raise ValueError(f"table {table} does not exist: run the pipeline's publish and economics stages "
                             "before pushing")
    newest = wh.scalar(
        "SELECT MAX(s.as_of_date) FROM (SELECT DISTINCT as_of_date FROM customer_segments) s "
        "JOIN (SELECT DISTINCT as_of_date FROM customer_priority) p ON p.as_of_date = s.as_of_date "
        "WHERE s.as_of_date >= :d AND (NOT EXISTS (SELECT 1 FROM customer_holdout) "
        "OR s.as_of_date IN (SELECT DISTINCT as_of_date FROM customer_holdout))", {"d": as_of_date})
    if newest is None:
        if not wh.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d", {"d": as_of_date}):
            raise ValueError(f"customer_segments has no published labels for as_of_date={as_of_date}")
        if wh.scalar("SELECT COUNT(*) FROM customer_priority WHERE as_of_date >= :d", {"d": as_of_date}):
            raise ValueError(f"customer_holdout has no rows for as_of_date={as_of_date} or later although the "
                             "experiment has run on this warehouse: run run_experiment before pushing, so no "
                             "holdout customer is sent an action")
        raise ValueError(f"customer_priority has no rows for as_of_date={as_of_date} or later: "
                         "run the economics stage before pushing")
    return pd.Timestamp(newest).date()


def load_labels(wh: Warehouse, label_date: dt.date) -> pd.DataFrame:
    """Published labels of ``label_date`` with their checksums (CLV tier A = top quarter of CLV 365 d)."""
    labels = wh.query_df(f"WITH l AS ({LABELS_SQL}) SELECT l.*, {CHECKSUM_SQL} AS checksum FROM l "
                         "ORDER BY l.customer_key", {"label_date": label_date})
    if labels.empty:
        raise ValueError(f"customer_segments has no published labels for as_of_date={label_date}")
    labels["segment_id"] = labels["segment_id"].astype("int64")
    return labels


def changed_since_last_ack(wh: Warehouse, target: str, label_date: dt.date) -> pd.DataFrame:
    """Labels of ``label_date`` whose checksum differs from what ``target`` acknowledged, in key order.

    Customers whose acknowledged labels are newer than ``label_date`` are left
    out: the target never goes back in time.
    """
    changed = wh.query_df(CHANGED_SQL, {"target": target, "label_date": label_date,
                                        "label_day": label_date.isoformat()})
    changed["segment_id"] = changed["segment_id"].astype("int64")
    changed["deliveries_acked"] = changed["deliveries_acked"].astype("int64")
    changed["label_date"] = label_date
    return changed


@dataclass
class PushPlan:
    """Which labels a push sends: the newest complete date on or after the run's date."""

    run_date: dt.date
    label_date: dt.date
    customers: int
    newer_delivered: int


def plan_push(wh: Warehouse, target: str, run_date: dt.date) -> PushPlan:
    """Pick the newest complete label date ``>= run_date``; count the customers already holding newer labels."""
    label_date = newest_label_date(wh, run_date)
    customers = int(wh.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d", {"d": label_date}))
    newer = int(wh.scalar(NEWER_DELIVERED_SQL, {"target": target, "label_date": label_date}))
    return PushPlan(run_date, label_date, customers, newer)


@dataclass
class Batch:
    """One request's worth of customers, with an idempotency key derived from its records' content keys."""

    number: int
    records: pd.DataFrame
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = hashlib.sha256("|".join(self.records["record_key"]).encode()).hexdigest()[:40]

    @property
    def label_date(self) -> dt.date:
        return self.records["label_date"].iloc[0]


def plan_batches(changed: pd.DataFrame, batch_size: int | None) -> Iterator[Batch]:
    """Cut the changed customers into batches in customer-key order (``None``: one batch)."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if changed.empty:
        return
    ordered = changed.sort_values("customer_key", kind="stable").reset_index(drop=True)
    size = batch_size or len(ordered)
    for number, start in enumerate(range(0, len(ordered), size), start=1):
        yield Batch(number, ordered.iloc[start:start + size].reset_index(drop=True))


def payload(records: pd.DataFrame) -> list[dict]:
    """The records as they leave the warehouse: the key and the segment fields only."""
    out = records[["customer_key", *PUSH_FIELDS]].copy()
    out["segment_id"] = out["segment_id"].astype(int)
    out["holdout"] = out["holdout"].astype(bool)
    return out.to_dict(orient="records")


@dataclass
class BatchOutcome:
    """What the target said about one batch."""

    acknowledged: list[str]
    failed: dict[str, str]
    status_code: int
    attempts: int
    detail: str = ""


def record_batch(wh: Warehouse, *, target: str, run_id: str, as_of_date: dt.date, batch: Batch,
                 outcome: BatchOutcome) -> None:
    """Upsert the batch's audit row and move the acknowledged keys' state, atomically and set-based.

    ``as_of_date`` is the run's date; the state records the batch's label date.
    """
    acked = batch.records[batch.records["customer_key"].isin(outcome.acknowledged)]
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    status = "ok" if not outcome.failed else ("partial" if outcome.acknowledged else "failed")
    ack_id = uuid.uuid4().hex
    state = pd.DataFrame({"target": target, "customer_key": acked["customer_key"], "checksum": acked["checksum"],
                          "as_of_date": acked["label_date"], "acknowledged_at": now,
                          "record_key": acked["record_key"], "deliveries": acked["deliveries_acked"] + 1,
                          "ack_id": ack_id})
    with wh.begin() as conn:
        if len(state):
            # Insert the new rows, then drop the target's older row of every customer just written.
            wh.insert_df("crm_push_state", state, conn)
            conn.execute(sa.text(
                "DELETE FROM crm_push_state WHERE target = :t AND ack_id IS DISTINCT FROM :a AND customer_key IN "
                "(SELECT customer_key FROM crm_push_state WHERE target = :t AND ack_id = :a)"),
                {"t": target, "a": ack_id})
        _upsert_log_row(wh, conn, {
            "target": target, "run_id": run_id, "as_of_date": as_of_date, "label_date": batch.label_date,
            "batch": batch.number, "idempotency_key": batch.key, "customers": len(batch.records),
            "acknowledged": len(acked), "failed": len(outcome.failed), "status": status,
            "response_code": outcome.status_code, "attempts": outcome.attempts,
            "detail": outcome.detail[:1000], "logged_at": now})


def _upsert_log_row(wh: Warehouse, conn: sa.Connection, row: dict) -> None:
    """Replace the audit row of (target, idempotency key); attempts add up over retries of the batch."""
    keys = {"t": row["target"], "k": row["idempotency_key"]}
    earlier = conn.execute(sa.text(
        "SELECT COALESCE(SUM(attempts), 0) FROM crm_push_log WHERE target = :t AND idempotency_key = :k"),
        keys).scalar()
    conn.execute(sa.text("DELETE FROM crm_push_log WHERE target = :t AND idempotency_key = :k"), keys)
    wh.insert_df("crm_push_log", pd.DataFrame([{**row, "attempts": int(earlier or 0) + row["attempts"]}]), conn)


#: The outbox payload as JSON text, built by the warehouse (keys in sorted order), per SQLAlchemy dialect.
PAYLOAD_SQL = {
    "duckdb": "CAST(to_json(struct_pack(clv_tier := p.clv_tier, customer_key := p.customer_key, "
              "holdout := p.holdout, priority := p.priority, segment_action := p.segment_action, "
              "segment_id := p.segment_id, segment_name := p.segment_name)) AS VARCHAR)",
    "snowflake": "TO_JSON(OBJECT_CONSTRUCT_KEEP_NULL('clv_tier', p.clv_tier, 'customer_key', p.customer_key, "
                 "'holdout', p.holdout, 'priority', p.priority, 'segment_action', p.segment_action, "
                 "'segment_id', p.segment_id, 'segment_name', p.segment_name))",
    "postgresql": "CAST(json_build_object('clv_tier', p.clv_tier, 'customer_key', p.customer_key, "
                  "'holdout', p.holdout, 'priority', p.priority, 'segment_action', p.segment_action, "
                  "'segment_id', p.segment_id, 'segment_name', p.segment_name) AS VARCHAR)",
}

_PENDING_COLUMNS = ("customer_key", *PUSH_FIELDS, "checksum", "deliveries_acked", "record_key")


def deliver_to_outbox(wh: Warehouse, *, target: str, run_id: str, as_of_date: dt.date,
                      label_date: dt.date) -> dict[str, int | str]:
    """Write every changed customer to ``crm_outbox`` and move their state, in one set-based transaction.

    The changed set is materialised once in ``crm_push_pending`` (the state
    changes under it within the transaction); outbox rows whose
    ``record_key`` is already there are not written again; the audit row is
    upserted by (target, idempotency key). Nothing leaves the warehouse, so
    the outbox acknowledges every record. Returns the counts and the key.
    """
    payload_sql = PAYLOAD_SQL.get(wh.dialect)
    if payload_sql is None:
        raise NotImplementedError(f"crm_outbox: no JSON payload expression for the {wh.dialect} dialect; "
                                  f"supported: {', '.join(PAYLOAD_SQL)}")
    cols = ", ".join(_PENDING_COLUMNS)
    params = {"target": target, "label_date": label_date, "label_day": label_date.isoformat()}
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime()
    with wh.begin() as conn:
        conn.execute(sa.text("DELETE FROM crm_push_pending WHERE target = :target"), params)
        conn.execute(sa.text(f"INSERT INTO crm_push_pending (target, label_date, {cols}) "
                             f"SELECT :target, :label_date, {cols} FROM ({CHANGED_SQL}) c"), params)
        record_keys = [k for (k,) in conn.execute(sa.text(
            "SELECT record_key FROM crm_push_pending WHERE target = :target ORDER BY customer_key"), params)]
        if not record_keys:
            return {"changed": 0, "written": 0, "idempotency_key": ""}
        key = hashlib.sha256("|".join(record_keys).encode()).hexdigest()[:40]
        batch = {**params, "k": key, "now": now}
        new_rows = "FROM crm_push_pending p WHERE p.target = :target AND NOT EXISTS " \
                   "(SELECT 1 FROM crm_outbox o WHERE o.target = :target AND o.record_key = p.record_key)"
        written = conn.execute(sa.text(f"SELECT COUNT(*) {new_rows}"), batch).scalar()
        conn.execute(sa.text(
            "INSERT INTO crm_outbox (target, as_of_date, batch_key, customer_key, payload, checksum, created_at, "
            f"record_key) SELECT p.target, p.label_date, :k, p.customer_key, {payload_sql}, p.checksum, :now, "
            f"p.record_key {new_rows}"), batch)
        conn.execute(sa.text(
            "DELETE FROM crm_push_state WHERE target = :target AND customer_key IN "
            "(SELECT customer_key FROM crm_push_pending WHERE target = :target)"), batch)
        conn.execute(sa.text(
            "INSERT INTO crm_push_state (target, customer_key, checksum, as_of_date, acknowledged_at, record_key, "
            "deliveries, ack_id) SELECT target, customer_key, checksum, label_date, :now, record_key, "
            "deliveries_acked + 1, :k FROM crm_push_pending WHERE target = :target"), batch)
        _upsert_log_row(wh, conn, {
            "target": target, "run_id": run_id, "as_of_date": as_of_date, "label_date": label_date, "batch": 1,
            "idempotency_key": key, "customers": len(record_keys), "acknowledged": len(record_keys), "failed": 0,
            "status": "ok", "response_code": 200, "attempts": 1,
            "detail": f"{written} outbox rows written" if written != len(record_keys) else "", "logged_at": now})
        conn.execute(sa.text("DELETE FROM crm_push_pending WHERE target = :target"), params)
    return {"changed": len(record_keys), "written": int(written), "idempotency_key": key}


#: The current labels in the outbox: each customer's newest row (what a reverse-ETL sync reads).
CURRENT_OUTBOX_SQL = """
SELECT target, customer_key, as_of_date, payload, checksum, record_key FROM (
    SELECT o.*, ROW_NUMBER() OVER (PARTITION BY target, customer_key
                                   ORDER BY as_of_date DESC, created_at DESC, record_key) AS rn
    FROM crm_outbox o WHERE target = :target) ranked
WHERE rn = 1
ORDER BY customer_key
"""
