"""What to push to a CRM, and the bookkeeping that makes a push exactly-once.

The pattern is the one reverse-ETL tools use (Hightouch, Segment Reverse ETL):
a per-target state table remembers, for each customer key, the checksum of
the fields last *acknowledged* by the target. A push sends only customers
whose checksum differs (their published segment, segment name, CLV tier,
priority or action changed) or who were never acknowledged, which includes
every record the target rejected last time.

- Labels are read from the warehouse (``customer_segments`` joined with
  ``customer_clv`` and ``customer_priority``), never passed as arguments.
- Only the id property and the segment fields leave the warehouse: no names,
  emails, phones or addresses (:data:`PUSH_FIELDS`).
- Batches are cut in customer-key order. After each batch the acknowledged
  keys go into ``crm_push_state`` and the batch into ``crm_push_log`` in one
  transaction, so a push killed mid-way resumes with the first
  unacknowledged batch, which has the same content and idempotency key as
  before (the acknowledged batches were a prefix of the same ordering).
- A batch the target applied but whose acknowledgement was lost is sent again
  with the same idempotency key: upserts by id and receivers that drop repeated
  keys keep every customer in the target exactly once.

Webhook signatures: ``X-Segments-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>." + raw body)``; receivers recompute it with
:func:`verify_signature` and refuse stale timestamps (replays).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

#: The fields that leave the warehouse, besides the id property.
PUSH_FIELDS = ("segment_id", "segment_name", "clv_tier", "priority", "segment_action")
TARGETS = ("outbox", "webhook", "hubspot", "salesforce")
SIGNATURE_HEADER = "X-Segments-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"

LABELS_SQL = """
SELECT s.customer_key, s.segment_id, s.segment_name,
    CASE NTILE(4) OVER (ORDER BY c.clv_365d DESC, s.customer_key)
        WHEN 1 THEN 'A' WHEN 2 THEN 'B' WHEN 3 THEN 'C' ELSE 'D' END AS clv_tier,
    COALESCE(p.priority, 'unknown') AS priority,
    COALESCE(p.action, '') AS segment_action
FROM customer_segments s
LEFT JOIN customer_clv c ON c.as_of_date = s.as_of_date AND c.customer_key = s.customer_key
LEFT JOIN customer_priority p ON p.as_of_date = s.as_of_date AND p.customer_key = s.customer_key
WHERE s.as_of_date = :d
ORDER BY s.customer_key
"""


def checksum(row: pd.Series | dict) -> str:
    """Checksum of the pushed fields of one customer."""
    text = "\x1f".join(str(row[f]) for f in PUSH_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_labels(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame:
    """Published labels of ``as_of_date`` with their checksums (CLV tier A = top quarter of CLV 365 d)."""
    labels = wh.query_df(LABELS_SQL, {"d": as_of_date})
    if labels.empty:
        raise ValueError(f"customer_segments has no published labels for as_of_date={as_of_date}")
    labels["segment_id"] = labels["segment_id"].astype("int64")
    labels["checksum"] = labels.apply(checksum, axis=1)
    return labels


def changed_since_last_ack(wh: Warehouse, target: str, labels: pd.DataFrame) -> pd.DataFrame:
    """Labels whose checksum differs from the last one ``target`` acknowledged."""
    state = wh.query_df("SELECT customer_key, checksum FROM crm_push_state WHERE target = :t", {"t": target})
    merged = labels.merge(state, on="customer_key", how="left", suffixes=("", "_acked"))
    return merged[merged["checksum"] != merged["checksum_acked"]].drop(columns="checksum_acked").reset_index(drop=True)


@dataclass
class Batch:
    """One request's worth of customers, with a content-derived idempotency key."""

    number: int
    records: pd.DataFrame
    key: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256("|".join(self.records["customer_key"] + ":" + self.records["checksum"]).encode())
        self.key = digest.hexdigest()[:40]


def plan_batches(changed: pd.DataFrame, batch_size: int) -> Iterator[Batch]:
    """Cut the changed customers into batches in customer-key order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ordered = changed.sort_values("customer_key", kind="stable").reset_index(drop=True)
    for number, start in enumerate(range(0, len(ordered), batch_size), start=1):
        yield Batch(number, ordered.iloc[start:start + batch_size].reset_index(drop=True))


def payload(records: pd.DataFrame) -> list[dict]:
    """The records as they leave the warehouse: the key and the segment fields only."""
    out = records[["customer_key", *PUSH_FIELDS]].copy()
    out["segment_id"] = out["segment_id"].astype(int)
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
    """Write the batch's audit row and move the acknowledged keys' state, atomically."""
    acked = batch.records[batch.records["customer_key"].isin(outcome.acknowledged)]
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    status = "ok" if not outcome.failed else ("partial" if outcome.acknowledged else "failed")
    log_row = pd.DataFrame([{
        "target": target, "run_id": run_id, "as_of_date": as_of_date, "batch": batch.number,
        "idempotency_key": batch.key, "customers": len(batch.records), "acknowledged": len(acked),
        "failed": len(outcome.failed), "status": status, "response_code": outcome.status_code,
        "attempts": outcome.attempts, "detail": outcome.detail[:1000], "logged_at": now,
    }])
    state = pd.DataFrame({"target": target, "customer_key": acked["customer_key"], "checksum": acked["checksum"],
                          "as_of_date": as_of_date, "acknowledged_at": now})
    with wh.begin() as conn:
        if len(state):
            keys = ", ".join(f"'{k}'" for k in state["customer_key"])  # keys are our own hex ids
            conn.exec_driver_sql(f"DELETE FROM crm_push_state WHERE target = '{target}' AND customer_key IN ({keys})")
            wh.insert_df("crm_push_state", state, conn)
        wh.insert_df("crm_push_log", log_row, conn)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The webhook signature header value for ``body``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, tolerance_s: int = 300,
                     now: float | None = None) -> bool:
    """Check a webhook signature (what a receiver runs); refuses timestamps older than ``tolerance_s``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def outbox_rows(target: str, as_of_date: dt.date, batch: Batch) -> pd.DataFrame:
    """Rows of the ``crm_outbox`` table for one batch (read by reverse-ETL tools)."""
    records = payload(batch.records)
    return pd.DataFrame({
        "target": target, "as_of_date": as_of_date, "batch_key": batch.key,
        "customer_key": [r["customer_key"] for r in records],
        "payload": [json.dumps(r, sort_keys=True) for r in records],
        "checksum": batch.records["checksum"].to_numpy(),
        "created_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
    })
