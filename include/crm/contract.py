"""What to push to a CRM, and the bookkeeping that makes a push exactly-once and forward-only.

The pattern is the one reverse-ETL tools use (Hightouch, Segment Reverse ETL):
a per-target state table remembers, for each *record* of the target, the
checksum of the fields last *acknowledged* by the target and the date of those
labels. A record is one of the CRM's own records, found by its native id
(:mod:`include.crm.matching`): a HubSpot contact id, a Salesforce Contact Id,
or, for the outbox and the webhook by default, the customer key. A push sends
only records whose checksum differs (their customer's published segment,
segment name, CLV tier, priority or action changed, or the record now belongs
to another customer) or that were never acknowledged, which includes every
record the target rejected last time.

- The CRM only moves forward. A push for as-of date ``d`` sends the labels of
  the newest complete date ``L >= d`` (segments and priorities published,
  :func:`newest_label_date`), so re-running or backfilling an old date sends
  the newest labels' differences, never older content over newer. A record
  whose acknowledged labels are newer than ``L`` is never sent.
- Nothing is created by default: a customer without a record in the CRM is
  counted (``customers_without_record``), never created.
- Records whose customer disappeared (a merge, a customer no longer
  published, a CRM record that left the identity map) get the survivor's
  labels or a clear; records of an erased person get a clear, after which
  their state row is deleted (:mod:`include.erasure`).
- Every record carries a content key: a hash of the record id, the checksum of
  its fields, the label date and how many deliveries of this record the
  target has acknowledged. A changed label therefore always has a new key (a
  receiver dropping repeated keys can never swallow it, even when a date is
  republished back and forth), while a resend of an unacknowledged record has
  the same key. A batch's idempotency key hashes its records' keys.
- Each sent record is counted as ``new``, ``moved`` (another segment id),
  ``renamed`` (same segment id, new name), ``updated`` (same segment, other
  fields), ``merged`` (now carries another customer's labels), ``cleared`` or
  ``erased``, per batch in ``crm_push_log`` and per push in ``crm_push_runs``.
- Change detection, state updates and outbox writes are set-based SQL
  (``md5``/``concat_ws`` run unchanged on DuckDB and Snowflake): no per-row
  Python over the whole customer base (only the few records whose customer
  disappeared are resolved in Python).
- Only the record id and the segment fields leave the warehouse: no names,
  emails, phones or addresses (:data:`PUSH_FIELDS`).
- Holdouts (``customer_holdout``, written by the experiment stage) are sent
  with ``holdout = true`` and an empty ``segment_action``: the playbook action
  goes only to the treated. Once the experiment has run on a warehouse, a
  date counts as complete only when its holdout is recorded, so no push can
  send actions to customers whose holdout flag is not yet known.
- Batches are cut in record-id order. After each batch the acknowledged
  records go into ``crm_push_state`` and the batch into ``crm_push_log`` in one
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from include.crm.matching import CLEAR_CHECKSUM, CrmMatchingError, Matching, ambiguous_sql, records_sql
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

#: The fields that leave the warehouse, besides the record id.
PUSH_FIELDS = ("segment_id", "segment_name", "clv_tier", "priority", "segment_action", "holdout")
TARGETS = ("outbox", "webhook", "hubspot", "salesforce")
#: Targets that live in the warehouse: nothing leaves it, and an erasure deletes their rows outright.
WAREHOUSE_TARGETS = ("outbox",)
#: How a sent record changed, in the order the counts are reported.
CHANGES = ("new", "moved", "renamed", "updated", "merged", "cleared", "erased")
#: ``crm_push_log`` / ``crm_push_runs`` column of each change.
CHANGE_COLUMNS = {"new": "new_records", **{c: c for c in CHANGES if c != "new"}}

LABELS_SQL = """
SELECT s.customer_key, s.segment_id, s.segment_name,
    -- Quartiles of CLV among the customers it scored; 'unknown' without a score, or where the date's CLV fit
    -- failed its holdout check (clv_runs.status 'fitted'): a figure that failed its check is not sent as true.
    CASE WHEN c.clv_365d IS NULL OR r.status = 'fitted' THEN 'unknown'
        ELSE CASE NTILE(4) OVER (PARTITION BY (c.clv_365d IS NULL OR r.status = 'fitted')
                                 ORDER BY c.clv_365d DESC, s.customer_key)
            WHEN 1 THEN 'A' WHEN 2 THEN 'B' WHEN 3 THEN 'C' ELSE 'D' END END AS clv_tier,
    COALESCE(p.priority, 'unknown') AS priority,
    -- The playbook action goes to the treated only: a holdout customer is sent none.
    CASE WHEN h.holdout THEN '' ELSE COALESCE(p.action, '') END AS segment_action,
    COALESCE(h.holdout, FALSE) AS holdout
FROM customer_segments s
LEFT JOIN customer_clv c ON c.as_of_date = s.as_of_date AND c.customer_key = s.customer_key
LEFT JOIN clv_runs r ON r.as_of_date = s.as_of_date
LEFT JOIN customer_priority p ON p.as_of_date = s.as_of_date AND p.customer_key = s.customer_key
LEFT JOIN customer_holdout h ON h.as_of_date = s.as_of_date AND h.customer_key = s.customer_key
WHERE s.as_of_date = :label_date
"""

#: Checksum of the pushed fields (unit separator between them; NULL reads as ''). A clear is all empty.
CHECKSUM_SQL = "md5(concat_ws(chr(31), " + ", ".join(
    f"COALESCE(CAST(l.{f} AS VARCHAR), '')" for f in PUSH_FIELDS) + "))"

#: How a changed record differs from what the target acknowledged (``st``) for the current labels (``cur``).
CHANGE_SQL = f"""CASE
        WHEN st.checksum IS NULL OR st.checksum = '{CLEAR_CHECKSUM}' THEN 'new'
        WHEN st.customer_key IS NOT NULL AND st.customer_key <> cur.customer_key THEN 'merged'
        WHEN st.segment_id IS NULL THEN 'updated'
        WHEN st.segment_id <> cur.segment_id THEN 'moved'
        WHEN COALESCE(st.segment_name, '') <> COALESCE(cur.segment_name, '') THEN 'renamed'
        ELSE 'updated' END"""

#: Columns of a changed record, in ``crm_push_pending`` order.
RECORD_COLUMNS = ("record_id", "matched_by", "customer_key", *PUSH_FIELDS, "checksum", "deliveries_acked",
                  "record_key", "change", "erasure_id")


def _current_sql(matching: Matching, dialect: str) -> str:
    """CTEs ``labelled`` (labels of ``:label_date`` with checksums) and ``cur`` (each target record with its labels)."""
    labelled = f"""l AS ({LABELS_SQL}),
labelled AS (SELECT l.*, {CHECKSUM_SQL} AS checksum FROM l)"""
    if matching.customer_keyed:  # each customer is its own record: no join (the 480k-customer outbox push)
        return f"""{labelled},
cur AS (SELECT labelled.customer_key AS record_id, 'customer_key' AS matched_by, labelled.* FROM labelled
        {_survivor_records_sql() if matching.on_merge == "survivor" else ""})"""
    return f"""{labelled},
r AS ({records_sql(matching, dialect)}),
cur AS (SELECT r.record_id, r.matched_by, labelled.* FROM r JOIN labelled ON labelled.customer_key = r.customer_key)"""


def _survivor_records_sql() -> str:
    """Records of vanished customer keys that carry their survivor's labels (state ``customer_key`` = the
    survivor): current records of the survivor from then on, so a later change reaches them set-based and
    the survivor is looked up once, when the key vanishes (:func:`resolve_stale`)."""
    return """UNION ALL
        SELECT st.record_id, 'customer_key', labelled.* FROM crm_push_state st
        JOIN labelled ON labelled.customer_key = st.customer_key
        WHERE st.target = :target AND st.matched_by = 'customer_key' AND st.erasure_id IS NULL
          AND st.record_id <> st.customer_key
          AND NOT EXISTS (SELECT 1 FROM customer_segments s WHERE s.as_of_date = :label_date
                          AND s.customer_key = st.record_id)"""


def changed_sql(matching: Matching, dialect: str) -> str:
    """Target records of ``:label_date`` whose labels the target has not acknowledged, with content keys."""
    fields = ", ".join(f"cur.{f}" for f in PUSH_FIELDS)
    return f"""WITH {_current_sql(matching, dialect)}
SELECT cur.record_id, cur.matched_by, cur.customer_key, {fields}, cur.checksum,
    COALESCE(st.deliveries, 0) AS deliveries_acked,
    md5(concat_ws('|', cur.record_id, cur.checksum, :label_day,
                  CAST(COALESCE(st.deliveries, 0) AS VARCHAR))) AS record_key,
    {CHANGE_SQL} AS change,
    CAST(NULL AS VARCHAR) AS erasure_id
FROM cur
LEFT JOIN crm_push_state st
    ON st.target = :target AND st.matched_by = cur.matched_by AND st.record_id = cur.record_id
WHERE (st.checksum IS NULL OR st.checksum <> cur.checksum)
  AND (st.as_of_date IS NULL OR st.as_of_date <= :label_date)
ORDER BY cur.record_id
"""


def _counts_sql(matching: Matching, dialect: str) -> str:
    """Customers, their records, customers without a native record, native records (with and without
    labels), and records whose acknowledged labels are newer than ``:label_date`` (never sent older content)."""
    by = matching.by
    newer = ("(SELECT COUNT(*) FROM cur JOIN crm_push_state st ON st.target = :target AND st.matched_by = "
             "cur.matched_by AND st.record_id = cur.record_id WHERE st.as_of_date > :label_date) AS newer_delivered")
    if matching.customer_keyed:
        return f"""WITH cur AS (SELECT customer_key AS record_id, 'customer_key' AS matched_by
                   FROM customer_segments WHERE as_of_date = :label_date)
SELECT (SELECT COUNT(*) FROM cur) AS customers, (SELECT COUNT(*) FROM cur) AS records,
    0 AS customers_without_record, (SELECT COUNT(*) FROM cur) AS native_records, 0 AS records_without_labels,
    {newer}"""
    return f"""WITH s AS (SELECT customer_key FROM customer_segments WHERE as_of_date = :label_date),
r AS ({records_sql(matching, dialect)}),
cur AS (SELECT r.* FROM r JOIN s ON s.customer_key = r.customer_key)
SELECT (SELECT COUNT(*) FROM s) AS customers,
    (SELECT COUNT(*) FROM cur) AS records,
    (SELECT COUNT(*) FROM s WHERE NOT EXISTS
        (SELECT 1 FROM r WHERE r.customer_key = s.customer_key AND r.matched_by = '{by}')) AS customers_without_record,
    (SELECT COUNT(*) FROM r WHERE r.matched_by = '{by}') AS native_records,
    (SELECT COUNT(*) FROM r WHERE r.matched_by = '{by}' AND NOT EXISTS
        (SELECT 1 FROM s WHERE s.customer_key = r.customer_key)) AS records_without_labels,
    {newer}"""


def _stale_sql(matching: Matching, dialect: str) -> str:
    """State rows whose record no longer carries a current customer's labels (and is not cleared yet),
    plus every row of an erased person."""
    kinds = ", ".join(f"'{k}'" for k in matching.kinds)
    current = ("cur AS (SELECT customer_key AS record_id, 'customer_key' AS matched_by FROM customer_segments "
               "WHERE as_of_date = :label_date)" if matching.customer_keyed else
               f"""r AS ({records_sql(matching, dialect)}),
s AS (SELECT customer_key FROM customer_segments WHERE as_of_date = :label_date),
cur AS (SELECT r.record_id, r.matched_by FROM r JOIN s ON s.customer_key = r.customer_key)""")
    # With survivors, a record whose stored customer (its survivor) is labelled is current, not stale.
    survivor = matching.customer_keyed and matching.on_merge == "survivor"
    join = ("LEFT JOIN customer_segments sv ON sv.as_of_date = :label_date AND sv.customer_key = st.customer_key "
            "AND st.matched_by = 'customer_key'" if survivor else "")
    return f"""WITH {current}
SELECT st.record_id, st.matched_by, st.customer_key, st.checksum, st.deliveries, st.as_of_date, st.erasure_id
FROM crm_push_state st
LEFT JOIN cur ON cur.record_id = st.record_id AND cur.matched_by = st.matched_by
{join}
WHERE st.target = :target AND (st.erasure_id IS NOT NULL OR (
    st.matched_by IN ({kinds}) AND st.as_of_date <= :label_date AND st.checksum <> '{CLEAR_CHECKSUM}'
    AND cur.record_id IS NULL{" AND sv.customer_key IS NULL" if survivor else ""}))
ORDER BY st.record_id"""


CRM_TABLES = ("crm_push_state", "crm_push_log", "crm_outbox", "crm_push_pending", "crm_push_runs", "erasure_log")
#: Tables the label SQL reads that a push may have to create itself (an older warehouse).
LABEL_TABLES = ("customer_holdout",)


def ensure_crm_tables(wh: Warehouse) -> None:
    """Create the CRM tables of ``schema.sql``, add columns added since, and key old state rows by record.

    A push needs only these tables; checking them through the
    information schema takes ~0.1 s where inspecting the whole schema takes
    seconds on DuckDB. State and outbox rows written before records were
    matched by native id are the customer's own record (``record_id =
    customer_key``, ``matched_by = 'customer_key'``).
    """
    script = load_sql("schema.sql")
    wanted = {t: cols for t, cols in parse_create_tables(script).items() if t in CRM_TABLES}
    creates = [stmt for stmt in split_statements(script)
               if any(stmt.startswith(f"CREATE TABLE IF NOT EXISTS {t} ") for t in (*wanted, *LABEL_TABLES))]
    wh.run_script(";\n".join(creates))
    have = wh.query_df("SELECT LOWER(table_name) AS t, LOWER(column_name) AS c FROM information_schema.columns "
                       "WHERE LOWER(table_name) IN (" + ", ".join(f"'{t}'" for t in wanted) + ")")
    present = set(zip(have["t"], have["c"], strict=True))
    missing = [(t, c, ty) for t, cols in wanted.items() for c, ty in cols if (t, c) not in present]
    if missing:
        wh.run_script(";\n".join(f"ALTER TABLE {t} ADD COLUMN {c} {ty}" for t, c, ty in missing))
        log.info("schema: added %s", ", ".join(f"{t}.{c}" for t, c, _ in missing))
    wh.run_script("UPDATE crm_push_state SET record_id = customer_key, matched_by = 'customer_key' "
                  "WHERE record_id IS NULL;\n"
                  "UPDATE crm_outbox SET record_id = customer_key WHERE record_id IS NULL")


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


def _has_table(wh: Warehouse, table: str) -> bool:
    return bool(wh.scalar("SELECT COUNT(*) FROM information_schema.tables WHERE LOWER(table_name) = :t",
                          {"t": table}))


def _in_chunks(wh: Warehouse, sql: str, column_values: Sequence[str], params: dict, size: int = 500) -> pd.DataFrame:
    """Run ``sql`` (with ``{keys}`` where a bound list goes) once per chunk of ``column_values``; concatenate."""
    frames = []
    values = list(dict.fromkeys(column_values))
    for start in range(0, len(values), size):
        chunk = values[start:start + size]
        binds = {f"k{i}": v for i, v in enumerate(chunk)}
        frames.append(wh.query_df(sql.format(keys=", ".join(f":k{i}" for i in range(len(chunk)))),
                                  {**params, **binds}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_MOVES_SQL = """
WITH last AS (SELECT customer_key, MAX(as_of_date) AS d FROM identity_map
              WHERE customer_key IN ({keys}) AND as_of_date <= :label_date GROUP BY customer_key)
SELECT p.customer_key AS old_key, n.customer_key AS new_key, COUNT(*) AS records
FROM last
JOIN identity_map p ON p.customer_key = last.customer_key AND p.as_of_date = last.d
JOIN identity_map n ON n.as_of_date = :label_date AND n.source_system = p.source_system
    AND n.source_id = p.source_id
JOIN customer_segments s ON s.as_of_date = :label_date AND s.customer_key = n.customer_key
GROUP BY p.customer_key, n.customer_key"""


def survivors(wh: Warehouse, keys: Sequence[str], label_date: dt.date, keys_sql: str | None = None,
              params: dict | None = None) -> dict[str, str]:
    """The labelled customer of ``label_date`` each vanished customer key now lives on, where there is one.

    ``identity_changes`` (written by the identity stage: ``change = 'merge'``,
    ``customer_key`` merged into ``survivor_key``) is followed first, through
    chains of merges; a key it does not cover is resolved from ``identity_map``:
    the records the key held on the last date it existed, and the labelled
    customer holding most of them on ``label_date`` (ties: the smaller key).
    ``keys_sql`` (a query whose ``customer_key`` column lists ``keys``, with
    ``params``) lets that lookup run as one query instead of chunks of bound keys.
    """
    keys = [k for k in dict.fromkeys(keys) if isinstance(k, str)]
    if not keys:
        return {}
    found: dict[str, str] = {}
    if _has_table(wh, "identity_changes"):
        merges = wh.query_df("SELECT customer_key, survivor_key FROM identity_changes WHERE change = 'merge' "
                             "AND as_of_date <= :d ORDER BY as_of_date", {"d": label_date})
        into = dict(zip(merges["customer_key"], merges["survivor_key"], strict=True))
        labelled = set(_in_chunks(wh, "SELECT customer_key FROM customer_segments WHERE as_of_date = :d "
                                      "AND customer_key IN ({keys})", list(into.values()), {"d": label_date},
                                  size=5000).get("customer_key", []))
        for key in keys:
            seen, current = {key}, key
            while current in into and into[current] not in seen:
                current = into[current]
                seen.add(current)
                if current in labelled:
                    found[key] = current
                    break
    rest = [k for k in keys if k not in found]
    if rest and _has_table(wh, "identity_map"):
        if keys_sql is not None:
            moves = wh.query_df(_MOVES_SQL.format(keys=f"SELECT customer_key FROM ({keys_sql}) k"),
                                {**(params or {}), "label_date": label_date})
            moves = moves[moves["old_key"].isin(rest)]
        else:
            moves = _in_chunks(wh, _MOVES_SQL, rest, {"label_date": label_date})
        if len(moves):
            best = moves.sort_values(["old_key", "records", "new_key"], ascending=[True, False, True])
            found.update(best.drop_duplicates("old_key").set_index("old_key")["new_key"].to_dict())
    return found


def _record_key(record_id: str, checksum: str, label_date: dt.date, deliveries: int) -> str:
    """The content key of a record (what :func:`changed_sql` computes in SQL)."""
    return hashlib.md5("|".join((str(record_id), checksum, label_date.isoformat(), str(int(deliveries))))
                       .encode()).hexdigest()


def resolve_stale(wh: Warehouse, target: str, label_date: dt.date, matching: Matching,
                  dry_run: bool = False) -> pd.DataFrame:
    """Records the target acknowledged whose customer no longer carries them: survivor labels or clears.

    - A record of an erased person is cleared (``erased``); its state row is
      deleted once the target acknowledges the clear.
    - A record keyed by a customer key that vanished gets the survivor's
      labels with ``on_merge = 'survivor'`` (``merged``, once: from then on
      it is a current record of the survivor), else a clear (``cleared``).
    - A native CRM record that left the identity map, or whose customer is no
      longer labelled, is cleared; so is a record created (create mode) for a
      customer who now has a native record or is gone.

    An erased person's record delivered under an earlier matching cannot be
    addressed any more: its state row is deleted with a warning (not in a dry run).
    Returns records in :data:`RECORD_COLUMNS` order (plus nothing else).
    """
    params = {"target": target, "label_date": label_date}
    stale = wh.query_df(_stale_sql(matching, wh.dialect), params)
    if stale.empty:
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    erased = stale["erasure_id"].notna()
    other = erased & ~stale["matched_by"].isin(matching.kinds)
    if other.any() and not dry_run:
        # Records matched by an earlier configuration cannot be addressed any more: their state goes.
        with wh.begin() as conn:
            for e in stale.loc[other, "erasure_id"].unique():
                conn.execute(sa.text("DELETE FROM crm_push_state WHERE target = :t AND erasure_id = :e "
                                     f"AND matched_by NOT IN ({', '.join(repr(k) for k in matching.kinds)})"),
                             {"t": target, "e": e})
        log.warning("%s: %d records of erased persons were matched by an earlier configuration and cannot be "
                    "addressed; their state was deleted without a clear", target, int(other.sum()))
    if other.any():
        stale = stale[~other].reset_index(drop=True)
        erased = stale["erasure_id"].notna()
    # A record created for a customer without one is a stand-in: once stale, it is cleared, never relabelled.
    keyed = ~erased & stale["matched_by"].eq("customer_key")
    found = (survivors(wh, stale.loc[keyed, "customer_key"].tolist(), label_date,
                       keys_sql=f"SELECT customer_key FROM ({_stale_sql(matching, wh.dialect)}) st "
                                "WHERE st.matched_by = 'customer_key' AND st.erasure_id IS NULL", params=params)
             if matching.on_merge == "survivor" and keyed.any() else {})
    out = stale[["record_id", "matched_by"]].copy()
    out["customer_key"] = stale["customer_key"].where(~erased, None)
    for f in PUSH_FIELDS:
        out[f] = None
    out["checksum"] = CLEAR_CHECKSUM
    out["change"] = "cleared"
    out.loc[erased, "change"] = "erased"
    out["erasure_id"] = stale["erasure_id"]
    survivor = stale["customer_key"].map(found).where(keyed)
    if survivor.notna().any():
        # The survivors' labels only (the CLV tier needs every customer's CLV, which the warehouse ranks).
        labels = _in_chunks(wh, f"WITH l AS ({LABELS_SQL}) SELECT l.*, {CHECKSUM_SQL} AS checksum FROM l "
                                "WHERE l.customer_key IN ({keys})", survivor.dropna().tolist(),
                            {"label_date": label_date}, size=5000).set_index("customer_key")
        take = survivor.notna()
        rows = labels.loc[survivor[take]]
        out.loc[take, "customer_key"] = survivor[take].to_numpy()
        for f in (*PUSH_FIELDS, "checksum"):
            out.loc[take, f] = rows[f].to_numpy()
        out.loc[take, "change"] = "merged"
    # A survivor's labels are sent even when equal to what the record holds: from then on the record follows
    # the survivor (state customer_key) and is a current record, never looked up again.
    out = out[(out["checksum"].to_numpy() != stale["checksum"].to_numpy()) | out["change"].eq("merged")].copy()
    deliveries = stale.loc[out.index, "deliveries"].fillna(0).astype("int64")
    out["deliveries_acked"] = deliveries.to_numpy()
    out["record_key"] = [_record_key(r, c, label_date, d) for r, c, d in
                         zip(out["record_id"], out["checksum"], out["deliveries_acked"], strict=True)]
    return out[list(RECORD_COLUMNS)].reset_index(drop=True)


def changed_since_last_ack(wh: Warehouse, target: str, label_date: dt.date,
                           matching: Matching | None = None, dry_run: bool = False) -> pd.DataFrame:
    """Records of ``target`` whose labels of ``label_date`` differ from what it acknowledged, in record-id order.

    The current records (each with its customer's labels) plus the records
    whose customer disappeared (:func:`resolve_stale`). Records whose
    acknowledged labels are newer than ``label_date`` are left out: the target
    never goes back in time.
    """
    matching = matching or Matching.for_target(target)
    changed = wh.query_df(changed_sql(matching, wh.dialect), {"target": target, "label_date": label_date,
                                                             "label_day": label_date.isoformat()})
    stale = resolve_stale(wh, target, label_date, matching, dry_run=dry_run)
    if len(stale):
        changed = pd.concat([changed.astype(object), stale.astype(object)], ignore_index=True)
        changed = changed.sort_values("record_id", kind="stable").reset_index(drop=True)
    changed["segment_id"] = changed["segment_id"].astype("Int64")
    changed["deliveries_acked"] = changed["deliveries_acked"].astype("int64")
    changed["label_date"] = label_date
    return changed


@dataclass
class PushPlan:
    """Which labels a push sends (the newest complete date on or after the run's date) and to which records."""

    run_date: dt.date
    label_date: dt.date
    customers: int
    newer_delivered: int
    matched_by: str = "customer_key"
    records: int = 0
    customers_without_record: int = 0
    records_without_labels: int = 0
    ambiguous_records: int = 0
    other_matching_records: int = 0


def plan_push(wh: Warehouse, target: str, run_date: dt.date, matching: Matching | None = None) -> PushPlan:
    """Pick the newest complete label date ``>= run_date`` and count customers, their records and the unmatched.

    Raises
    ------
    CrmMatchingError
        When the target's records come from identity records of a source
        system (or emails) and none exist on the label date: the CRM's export
        was never loaded as an identity source, so every customer would be
        unmatched (and, in create mode, a duplicate would be created for each).
    """
    matching = matching or Matching.for_target(target)
    label_date = newest_label_date(wh, run_date)
    params = {"target": target, "label_date": label_date}
    if not matching.customer_keyed and not _has_table(wh, "identity_map"):
        raise CrmMatchingError(f"{target}: records are matched by {matching.by} but identity_map does not "
                               "exist: run resolve_identity first")
    counts = wh.query_df(_counts_sql(matching, wh.dialect), params).iloc[0]
    customers, records = int(counts["customers"]), int(counts["records"])
    if customers and not int(counts["native_records"]) and not matching.customer_keyed:
        where = (f"identity record of source_system '{matching.source_system}'" if matching.source_system
                 else "identity record with an email")
        raise CrmMatchingError(
            f"{target}: no {where} on {label_date}, so no customer can be matched to a record of this CRM. "
            "Load the CRM's export as an identity source (docs/crm.md) or set the target's match_source_system.")
    ambiguous = ambiguous_sql(matching, wh.dialect)
    other = int(wh.scalar("SELECT COUNT(*) FROM crm_push_state WHERE target = :t AND matched_by NOT IN ("
                          + ", ".join(f"'{k}'" for k in matching.kinds) + ")", {"t": target}))
    return PushPlan(run_date, label_date, customers, int(counts["newer_delivered"]),
                    matched_by=matching.by, records=records,
                    customers_without_record=int(counts["customers_without_record"]),
                    records_without_labels=int(counts["records_without_labels"]),
                    ambiguous_records=int(wh.scalar(ambiguous, params)) if ambiguous else 0,
                    other_matching_records=other)


@dataclass
class Batch:
    """One request's worth of records, with an idempotency key derived from its records' content keys."""

    number: int
    records: pd.DataFrame
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = hashlib.sha256("|".join(self.records["record_key"]).encode()).hexdigest()[:40]

    @property
    def label_date(self) -> dt.date:
        return self.records["label_date"].iloc[0]


def plan_batches(changed: pd.DataFrame, batch_size: int | None) -> Iterator[Batch]:
    """Cut the changed records into batches in record-id order (``None``: one batch)."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if changed.empty:
        return
    ordered = changed.sort_values("record_id", kind="stable").reset_index(drop=True)
    size = batch_size or len(ordered)
    for number, start in enumerate(range(0, len(ordered), size), start=1):
        yield Batch(number, ordered.iloc[start:start + size].reset_index(drop=True))


def _value(value: object) -> object:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def payload(records: pd.DataFrame) -> list[dict]:
    """The records as they leave the warehouse: the record's id and the segment fields only.

    A record keyed by its customer carries it as ``customer_key`` (as it always
    has); a record matched by a native id carries ``record_id`` and the
    ``customer_key`` whose labels it now holds. A clear has every field empty
    (``segment_id`` and ``holdout`` null).
    """
    out = []
    for r in records.to_dict(orient="records"):
        fields = {f: _value(r[f]) for f in PUSH_FIELDS}
        if fields["segment_id"] is not None:
            fields["segment_id"] = int(fields["segment_id"])
        if fields["holdout"] is not None:
            fields["holdout"] = bool(fields["holdout"])
        for f in ("segment_name", "clv_tier", "priority", "segment_action"):
            fields[f] = "" if fields[f] is None else fields[f]
        if r["matched_by"] == "customer_key":
            out.append({"customer_key": r["record_id"], **fields})
        else:
            out.append({"record_id": r["record_id"], "customer_key": _value(r["customer_key"]), **fields})
    return out


@dataclass
class BatchOutcome:
    """What the target said about one batch (record ids)."""

    acknowledged: list[str]
    failed: dict[str, str]
    status_code: int
    attempts: int
    detail: str = ""
    #: Records the target created (only in create mode; 0 by default, counted and logged).
    created: list[str] = field(default_factory=list)
    #: Failed records the target does not know (deleted or never there).
    not_found: list[str] = field(default_factory=list)


def change_counts(records: pd.DataFrame) -> dict[str, int]:
    """Records per kind of change (every kind of :data:`CHANGES`, 0 included)."""
    counts = records["change"].value_counts() if len(records) else {}
    return {c: int(counts.get(c, 0)) for c in CHANGES}


def _state_frame(records: pd.DataFrame, target: str, now: pd.Timestamp, ack_id: str) -> pd.DataFrame:
    return pd.DataFrame({
        "target": target, "customer_key": records["customer_key"].astype(object),
        "checksum": records["checksum"], "as_of_date": records["label_date"], "acknowledged_at": now,
        "record_key": records["record_key"], "deliveries": records["deliveries_acked"].astype("int64") + 1,
        "ack_id": ack_id, "record_id": records["record_id"], "matched_by": records["matched_by"],
        "segment_id": records["segment_id"].astype("Int64"),
        "segment_name": records["segment_name"].astype(object).where(records["segment_id"].notna(), None),
        "erasure_id": records["erasure_id"].astype(object)})


#: After new state rows went in under ``:a``: the target's older rows of the same records go.
_DROP_REPLACED_STATE = (
    "DELETE FROM crm_push_state WHERE target = :t AND ack_id IS DISTINCT FROM :a AND "
    "matched_by || '|' || record_id IN (SELECT matched_by || '|' || record_id FROM crm_push_state "
    "WHERE target = :t AND ack_id = :a)")
#: An erased person's record whose clear the target acknowledged leaves no row behind.
_DROP_ERASED_STATE = (f"DELETE FROM crm_push_state WHERE target = :t AND erasure_id IS NOT NULL "
                      f"AND checksum = '{CLEAR_CHECKSUM}'")


def _count_erasure_clears(conn: sa.Connection, records: pd.DataFrame) -> None:
    """Add acknowledged clears to each erasure's audit row."""
    erased = records[records["erasure_id"].notna()]
    for erasure_id, n in erased.groupby("erasure_id").size().items():
        conn.execute(sa.text("UPDATE erasure_log SET crm_records_cleared = COALESCE(crm_records_cleared, 0) + :n "
                             "WHERE erasure_id = :e"), {"n": int(n), "e": erasure_id})


def record_batch(wh: Warehouse, *, target: str, run_id: str, as_of_date: dt.date, batch: Batch,
                 outcome: BatchOutcome) -> None:
    """Upsert the batch's audit row and move the acknowledged records' state, atomically and set-based.

    ``as_of_date`` is the run's date; the state records the batch's label
    date. An erased person's acknowledged clear deletes its state row.
    """
    acked = batch.records[batch.records["record_id"].isin(outcome.acknowledged)]
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    status = "ok" if not outcome.failed else ("partial" if outcome.acknowledged else "failed")
    ack_id = uuid.uuid4().hex
    state = _state_frame(acked, target, now, ack_id)
    counts = change_counts(acked)
    with wh.begin() as conn:
        if len(state):
            # Insert the new rows, then drop the target's older row of every record just written.
            wh.insert_df("crm_push_state", state, conn)
            conn.execute(sa.text(_DROP_REPLACED_STATE), {"t": target, "a": ack_id})
            if counts["erased"]:
                conn.execute(sa.text(_DROP_ERASED_STATE), {"t": target})
                _count_erasure_clears(conn, acked)
        detail = outcome.detail
        if outcome.not_found:
            detail = f"{len(outcome.not_found)} not found in the CRM; " + detail
        if outcome.created:
            detail = f"{len(outcome.created)} records created (create mode); " + detail
        _upsert_log_row(wh, conn, {
            "target": target, "run_id": run_id, "as_of_date": as_of_date, "label_date": batch.label_date,
            "batch": batch.number, "idempotency_key": batch.key, "customers": len(batch.records),
            "acknowledged": len(acked), "failed": len(outcome.failed), "status": status,
            "response_code": outcome.status_code, "attempts": outcome.attempts,
            "detail": detail[:1000], "logged_at": now, "created": len(outcome.created),
            **{CHANGE_COLUMNS[c]: n for c, n in counts.items()}})


def _upsert_log_row(wh: Warehouse, conn: sa.Connection, row: dict) -> None:
    """Replace the audit row of (target, idempotency key); attempts add up over retries of the batch."""
    keys = {"t": row["target"], "k": row["idempotency_key"]}
    earlier = conn.execute(sa.text(
        "SELECT COALESCE(SUM(attempts), 0) FROM crm_push_log WHERE target = :t AND idempotency_key = :k"),
        keys).scalar()
    conn.execute(sa.text("DELETE FROM crm_push_log WHERE target = :t AND idempotency_key = :k"), keys)
    wh.insert_df("crm_push_log", pd.DataFrame([{**row, "attempts": int(earlier or 0) + row["attempts"]}]), conn)


def record_push_run(wh: Warehouse, summary: dict, run_id: str, conn: sa.Connection | None = None) -> None:
    """Replace this push's row in ``crm_push_runs`` (one per target, run and as-of date), in ``conn``'s
    transaction when given."""
    columns = {"target", "as_of_date", "label_date", "matched_by", "customers", "records",
               "customers_without_record", "records_without_labels", "ambiguous_records", "newer_delivered",
               "changed", "acknowledged", "failed", "not_found", "created", *CHANGE_COLUMNS.values()}
    row = {k: v for k, v in summary.items() if k in columns}
    row.update({CHANGE_COLUMNS[c]: summary.get(c, 0) for c in CHANGES})
    row.update(run_id=run_id, logged_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
               as_of_date=dt.date.fromisoformat(summary["as_of_date"]),
               label_date=dt.date.fromisoformat(summary["label_date"]))
    wh.replace_partition("crm_push_runs", pd.DataFrame([row]),
                         {"target": row["target"], "run_id": run_id, "as_of_date": row["as_of_date"]}, conn=conn)


def payload_sql(dialect: str, with_record_id: bool) -> str:
    """The outbox payload as JSON text, built by the warehouse (keys in sorted order), per SQLAlchemy dialect."""
    customer = "CASE WHEN p.matched_by = 'customer_key' THEN p.record_id ELSE p.customer_key END"
    keys = {"clv_tier": "p.clv_tier", "customer_key": customer, "holdout": "p.holdout", "priority": "p.priority",
            "segment_action": "p.segment_action", "segment_id": "p.segment_id", "segment_name": "p.segment_name"}
    if with_record_id:
        keys["record_id"] = "p.record_id"
    pairs = sorted(keys.items())
    if dialect == "duckdb":
        return ("CAST(to_json(struct_pack(" + ", ".join(f"{k} := {v}" for k, v in pairs)
                + ")) AS VARCHAR)")
    if dialect == "snowflake":
        return "TO_JSON(OBJECT_CONSTRUCT_KEEP_NULL(" + ", ".join(f"'{k}', {v}" for k, v in pairs) + "))"
    if dialect == "postgresql":
        return "CAST(json_build_object(" + ", ".join(f"'{k}', {v}" for k, v in pairs) + ") AS VARCHAR)"
    raise NotImplementedError(f"crm_outbox: no JSON payload expression for the {dialect} dialect; "
                              "supported: duckdb, snowflake, postgresql")


#: Kept for callers of the earlier name: the payload of records keyed by their customer.
PAYLOAD_SQL = {d: payload_sql(d, False) for d in ("duckdb", "snowflake", "postgresql")}


def deliver_to_outbox(wh: Warehouse, *, target: str, run_id: str, as_of_date: dt.date,
                      label_date: dt.date, matching: Matching | None = None,
                      run_summary: dict | None = None) -> dict[str, object]:
    """Write every changed record to ``crm_outbox`` and move their state, in one set-based transaction.

    The changed set is materialised once in ``crm_push_pending`` (the state
    changes under it within the transaction); outbox rows whose
    ``record_key`` is already there are not written again; the audit row is
    upserted by (target, idempotency key), and, given ``run_summary`` (the
    push's plan), the push's ``crm_push_runs`` row with the counts. Nothing
    leaves the warehouse, so the outbox acknowledges every record. Returns the
    counts and the key.
    """
    matching = matching or Matching.for_target(target)
    payload_json = payload_sql(wh.dialect, not matching.customer_keyed)
    cols = ", ".join(RECORD_COLUMNS)
    params = {"target": target, "label_date": label_date, "label_day": label_date.isoformat()}
    stale = resolve_stale(wh, target, label_date, matching)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime()
    with wh.begin() as conn:
        conn.execute(sa.text("DELETE FROM crm_push_pending WHERE target = :target"), params)
        conn.execute(sa.text(f"INSERT INTO crm_push_pending (target, label_date, {cols}) "
                             f"SELECT :target, :label_date, {cols} FROM ({changed_sql(matching, wh.dialect)}) c"),
                     params)
        if len(stale):
            frame = stale.assign(target=target, label_date=label_date)
            frame["segment_id"] = frame["segment_id"].astype("Int64")
            frame["holdout"] = frame["holdout"].astype("boolean")
            wh.insert_df("crm_push_pending", frame, conn)
        record_keys = [k for (k,) in conn.execute(sa.text(
            "SELECT record_key FROM crm_push_pending WHERE target = :target ORDER BY record_id"), params)]
        if not record_keys:
            result = {"changed": 0, "written": 0, "idempotency_key": "", **change_counts(pd.DataFrame())}
            if run_summary is not None:
                record_push_run(wh, {**run_summary, **result}, run_id, conn)
            return result
        counts = {c: 0 for c in CHANGES}
        for change, n in conn.execute(sa.text(
                "SELECT change, COUNT(*) FROM crm_push_pending WHERE target = :target GROUP BY change"), params):
            counts[change] = int(n)
        key = hashlib.sha256("|".join(record_keys).encode()).hexdigest()[:40]
        batch = {**params, "k": key, "now": now}
        new_rows = "FROM crm_push_pending p WHERE p.target = :target AND NOT EXISTS " \
                   "(SELECT 1 FROM crm_outbox o WHERE o.target = :target AND o.record_key = p.record_key)"
        written = conn.execute(sa.text(f"SELECT COUNT(*) {new_rows}"), batch).scalar()
        conn.execute(sa.text(
            "INSERT INTO crm_outbox (target, as_of_date, batch_key, customer_key, payload, checksum, created_at, "
            "record_key, record_id) SELECT p.target, p.label_date, :k, "
            "CASE WHEN p.matched_by = 'customer_key' THEN p.record_id ELSE p.customer_key END, "
            f"{payload_json}, p.checksum, :now, p.record_key, p.record_id {new_rows}"), batch)
        conn.execute(sa.text(
            "DELETE FROM crm_push_state WHERE target = :target AND matched_by || '|' || record_id IN "
            "(SELECT matched_by || '|' || record_id FROM crm_push_pending WHERE target = :target)"), batch)
        conn.execute(sa.text(
            "INSERT INTO crm_push_state (target, customer_key, checksum, as_of_date, acknowledged_at, record_key, "
            "deliveries, ack_id, record_id, matched_by, segment_id, segment_name, erasure_id) "
            "SELECT target, customer_key, checksum, label_date, :now, record_key, deliveries_acked + 1, :k, "
            "record_id, matched_by, segment_id, segment_name, erasure_id "
            "FROM crm_push_pending WHERE target = :target"), batch)
        if counts["erased"]:
            conn.execute(sa.text(_DROP_ERASED_STATE), {"t": target})
        _upsert_log_row(wh, conn, {
            "target": target, "run_id": run_id, "as_of_date": as_of_date, "label_date": label_date, "batch": 1,
            "idempotency_key": key, "customers": len(record_keys), "acknowledged": len(record_keys), "failed": 0,
            "status": "ok", "response_code": 200, "attempts": 1, "created": 0,
            "detail": f"{written} outbox rows written" if written != len(record_keys) else "", "logged_at": now,
            **{CHANGE_COLUMNS[c]: n for c, n in counts.items()}})
        result = {"changed": len(record_keys), "written": int(written), "idempotency_key": key, **counts}
        if run_summary is not None:
            record_push_run(wh, {**run_summary, **result, "acknowledged": len(record_keys)}, run_id, conn)
        conn.execute(sa.text("DELETE FROM crm_push_pending WHERE target = :target"), params)
    return result


#: The current labels in the outbox: each record's newest row (what a reverse-ETL sync reads).
CURRENT_OUTBOX_SQL = """
SELECT target, customer_key, record_id, as_of_date, payload, checksum, record_key FROM (
    SELECT o.*, ROW_NUMBER() OVER (PARTITION BY target, record_id
                                   ORDER BY as_of_date DESC, created_at DESC, record_key) AS rn
    FROM crm_outbox o WHERE target = :target) ranked
WHERE rn = 1
ORDER BY record_id
"""
