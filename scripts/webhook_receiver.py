"""A reference receiver for the segment webhook: verifies, deduplicates durably, never goes back in time.

    WEBHOOK_SECRET=S python scripts/webhook_receiver.py --port 8765 --state receiver.sqlite
    python scripts/webhook_receiver.py --report receiver.sqlite

What a receiver of the segment webhook has to do, in the order it does it:

1. refuse to start without a signing secret (``--secret`` or ``$WEBHOOK_SECRET``):
   an empty secret would accept anything signed with an empty one;
2. answer 400 to a request without ``Idempotency-Key``, with a malformed
   ``X-Segments-Signature`` or a body that is not the documented JSON;
3. recompute ``HMAC-SHA256(secret, "<t>.<idempotency key>.<raw body>")``
   (:func:`include.crm.signature.verify_signature`, constant-time compare)
   and answer 401 on a mismatch or a timestamp more than 5 minutes away;
4. in one SQLite transaction: record the idempotency key (a key seen before
   is answered ``200 duplicate`` and changes nothing, also after a restart)
   and upsert each customer's current labels unless it already holds labels
   of a newer date; then answer 202.

A crash after the commit and before the answer makes the sender resend the
same key, which step 4 drops: every batch is applied exactly once.
``--out`` additionally appends each accepted batch to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.crm.signature import (  # noqa: E402
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    MalformedSignature,
    verify_signature,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    idempotency_key TEXT PRIMARY KEY, label_date TEXT NOT NULL, received_at TEXT NOT NULL,
    records INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    customer_key TEXT PRIMARY KEY, label_date TEXT NOT NULL, fields TEXT NOT NULL,
    idempotency_key TEXT NOT NULL, updated_at TEXT NOT NULL
);
"""

#: Apply a customer's labels unless it holds labels of a newer date (ISO dates compare as text).
UPSERT_CUSTOMER = """
INSERT INTO customers (customer_key, label_date, fields, idempotency_key, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_key) DO UPDATE SET label_date = excluded.label_date, fields = excluded.fields,
    idempotency_key = excluded.idempotency_key, updated_at = excluded.updated_at
WHERE excluded.label_date >= customers.label_date
"""


#: A batch of 10,000 records is about 2 MB; anything far larger is not ours.
MAX_BODY_BYTES = 32 * 1024 * 1024


class BadRequest(ValueError):
    """A request the receiver answers with 400."""


def open_state(path: Path) -> sqlite3.Connection:
    """The receiver's SQLite store (created when missing); WAL so readers never block the writer."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def parse_body(body: bytes) -> tuple[str, list[dict]]:
    """``(label_date, records)`` of a webhook body, or :class:`BadRequest` naming what is wrong."""
    try:
        doc = json.loads(body)
        label_date = dt.date.fromisoformat(doc["label_date"]).isoformat()
        records = doc["records"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"body must be JSON with label_date (ISO date) and records: {type(exc).__name__}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("customer_key") for r in records):
        raise BadRequest("records must be a list of objects with a customer_key")
    return label_date, records


def apply_delivery(conn: sqlite3.Connection, key: str, label_date: str, records: list[dict],
                   body: bytes) -> dict:
    """Record ``key`` and upsert its customers in one transaction; a key seen before changes nothing."""
    now = dt.datetime.now(dt.UTC).isoformat()
    conn.execute("BEGIN IMMEDIATE")
    try:
        inserted = conn.execute(
            "INSERT OR IGNORE INTO deliveries (idempotency_key, label_date, received_at, records, body) "
            "VALUES (?, ?, ?, ?, ?)", (key, label_date, now, len(records), body.decode())).rowcount
        if not inserted:
            conn.execute("ROLLBACK")
            return {"status": "duplicate"}
        applied = 0
        for record in records:
            fields = json.dumps({k: v for k, v in record.items() if k != "customer_key"}, sort_keys=True)
            applied += conn.execute(UPSERT_CUSTOMER, (record["customer_key"], label_date, fields, key, now)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"status": "accepted", "applied": applied, "older_ignored": len(records) - applied}


def make_handler(secret: str, state: Path, out: Path | None):
    """The request handler class bound to one secret and store."""
    conn = open_state(state)
    lock = threading.Lock()  # one writer on the shared connection; SQLite serialises writes anyway

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self):
            self._answer(200, {"status": "ok"})

        def do_POST(self):
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                return self._answer(411, {"error": "Content-Length required"})
            if int(length) > MAX_BODY_BYTES:
                return self._answer(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            body = self.rfile.read(int(length))
            key = self.headers.get(IDEMPOTENCY_HEADER, "")
            try:
                if not key or len(key) > 200 or not key.isascii():
                    raise BadRequest(f"{IDEMPOTENCY_HEADER} required (ASCII, at most 200 characters)")
                if not verify_signature(secret, body, self.headers.get(SIGNATURE_HEADER), key):
                    return self._answer(401, {"error": "bad or stale signature"})
                label_date, records = parse_body(body)
            except (BadRequest, MalformedSignature) as exc:
                return self._answer(400, {"error": str(exc)})
            with lock:
                result = apply_delivery(conn, key, label_date, records, body)
                if out is not None and result["status"] == "accepted":
                    with open(out, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"idempotency_key": key, "label_date": label_date,
                                             "records": records}) + "\n")
            self._answer(202 if result["status"] == "accepted" else 200, result)

    return Handler


def serve(port: int, secret: str, state: Path, out: Path | None = None, host: str = "127.0.0.1") -> None:
    """Serve until interrupted."""
    server = ThreadingHTTPServer((host, port), make_handler(secret, state, out))
    print(f"webhook receiver on http://{host}:{server.server_address[1]} (state {state})", flush=True)
    server.serve_forever()


def report(path: Path) -> None:
    """Print what the receiver holds (``path``: the SQLite state, or the ``--out`` file next to it)."""
    if path.suffix == ".jsonl":
        path = path.with_suffix(".sqlite")
    if not path.exists():
        print(f"Webhook receiver: no state at {path}")
        return
    conn = open_state(path)
    batches, updates = conn.execute("SELECT COUNT(*), COALESCE(SUM(records), 0) FROM deliveries").fetchone()
    current = [json.loads(f) for (f,) in conn.execute("SELECT fields FROM customers")]
    dates = conn.execute("SELECT label_date, COUNT(*) FROM customers GROUP BY 1 ORDER BY 1").fetchall()
    print(f"Webhook receiver: {batches} signed batches, {updates:,} customer updates, "
          f"{len(current):,} customers held (labels of {', '.join(f'{d}: {n:,}' for d, n in dates) or 'none'})")
    for name, n in collections.Counter(c["segment_name"] for c in current).most_common():
        print(f"  {name:22s} {n:>7,d}")
    by_priority = collections.Counter(c["priority"] for c in current)
    print("  by priority: " + ", ".join(f"{k} {v:,}" for k, v in by_priority.most_common()))
    if current:
        print(f"  fields held: customer_key, {', '.join(current[0])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", default=None, help="signing secret (default: $WEBHOOK_SECRET)")
    parser.add_argument("--state", type=Path, help="SQLite file of seen keys and current labels "
                                                   "(default: --out with the suffix .sqlite)")
    parser.add_argument("--out", type=Path, help="also append accepted batches to this JSON-lines file")
    parser.add_argument("--report", type=Path, help="print what the receiver at this state file holds")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report)
        return 0
    secret = args.secret if args.secret is not None else os.environ.get("WEBHOOK_SECRET", "")
    if not secret:
        parser.error("no signing secret: pass --secret or set WEBHOOK_SECRET (refusing to accept unsigned "
                     "or empty-key-signed deliveries)")
    state = args.state or (args.out.with_suffix(".sqlite") if args.out else None)
    if state is None:
        parser.error("--state (or --out) is required: the seen idempotency keys must survive a restart")
    serve(args.port, secret, state, args.out, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
