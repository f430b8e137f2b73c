"""A reference receiver for the segment webhook: verifies, deduplicates durably, never goes back in time.

    WEBHOOK_SECRET=S python scripts/webhook_receiver.py --port 8765 --state receiver.sqlite
    python scripts/webhook_receiver.py --report receiver.sqlite

What a receiver of the segment webhook has to do, in the order it does it:

1. refuse to start without a signing secret (``--secret`` or ``$WEBHOOK_SECRET``):
   an empty or blank (whitespace-only) secret would accept anything signed
   with one that anybody can guess;
2. answer 411 without ``Content-Length``, 413 above :data:`MAX_BODY_BYTES`,
   415 unless the body is ``application/json``, 405 to other methods than POST;
3. answer 400 to a request without ``Idempotency-Key`` or with a malformed
   ``X-Segments-Signature`` (``t`` must be ASCII digits: :func:`~include.crm.signature.parse_signature`);
4. recompute ``HMAC-SHA256(secret, "<t>.<idempotency key>.<raw body>")``
   (:func:`include.crm.signature.verify_signature`, constant-time compare)
   and answer 401 on a mismatch or a timestamp more than 5 minutes away;
5. answer 400, naming the field, to a signed body that is not the documented
   JSON (:func:`parse_body`): every record's fields are type-checked before
   anything is written, so no value can reach SQLite that it cannot bind;
6. in one SQLite transaction: record the idempotency key (a key seen before
   is answered ``200 duplicate`` and changes nothing, also after a restart)
   and upsert each customer's current labels unless it already holds labels
   of a newer date; then answer 202.

Anything else that goes wrong is answered 500 (the sender retries) instead of
a dropped connection.

A crash after the commit and before the answer makes the sender resend the
same key, which step 4 drops: every batch is applied exactly once.
``--out`` additionally appends each accepted batch to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import sqlite3
import sys
import threading
import traceback
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


#: The documented record fields and their JSON types (``None``, JSON null, is accepted for all but the key:
#: a clear sends empty labels). Other fields (a newer sender's) are kept as sent, any JSON but NaN or infinity.
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "segment_id": (int,), "segment_name": (str,), "clv_tier": (str,), "priority": (str,),
    "segment_action": (str,), "holdout": (bool,),
}
#: The longest customer key accepted (the warehouse mints 16-character keys).
MAX_KEY_CHARS = 200
_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "an object", type(None): "null"}


class BadRequest(ValueError):
    """A request the receiver answers with 400."""


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _finite(value) -> bool:
    """No NaN or infinity anywhere in a parsed JSON value."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _refuse_constant(token: str):
    raise BadRequest(f"body holds {token}, which is not JSON")


def open_state(path: Path) -> sqlite3.Connection:
    """The receiver's SQLite store (created when missing); WAL so readers never block the writer."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def parse_body(body: bytes) -> tuple[str, list[dict]]:
    """``(label_date, records)`` of a webhook body, or :class:`BadRequest` naming the field that is wrong.

    The body is ``{"label_date": "<ISO date>", "records": [...], "batch_key": "..."}``; each record has a
    non-empty string ``customer_key`` (unique in the batch), the :data:`RECORD_FIELDS` with their types or
    null, and any other field as sent. ``NaN`` and ``Infinity`` (which Python's json reads) are refused.
    """
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8") from exc
    except BadRequest:
        raise
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc.msg} at character {exc.pos}") from exc
    except RecursionError as exc:
        raise BadRequest("body is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise BadRequest(f"body must be a JSON object with label_date and records, got {_json_type(doc)}")
    raw_date = doc.get("label_date")
    if not isinstance(raw_date, str):
        raise BadRequest(f"label_date must be an ISO date string (YYYY-MM-DD), got {_json_type(raw_date)}")
    try:
        label_date = dt.date.fromisoformat(raw_date).isoformat()
    except ValueError as exc:
        raise BadRequest(f"label_date must be an ISO date (YYYY-MM-DD), got {raw_date[:40]!r}") from exc
    if "batch_key" in doc and not isinstance(doc["batch_key"], str):
        raise BadRequest(f"batch_key must be a string, got {_json_type(doc['batch_key'])}")
    records = doc.get("records")
    if not isinstance(records, list):
        raise BadRequest(f"records must be an array of objects, got {_json_type(records)}")
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(record, dict):
            raise BadRequest(f"{where} must be an object, got {_json_type(record)}")
        key = record.get("customer_key")
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
            shown = _json_type(key) if not isinstance(key, str) else f"{len(key)} characters"
            raise BadRequest(f"{where}.customer_key must be a non-empty string of at most {MAX_KEY_CHARS} "
                             f"characters, got {shown if 'customer_key' in record else 'none'}")
        if key in seen:
            raise BadRequest(f"{where}.customer_key repeats records[{seen[key]}].customer_key")
        seen[key] = i
        for field, value in record.items():
            if field == "customer_key" or value is None:
                continue
            if not _finite(value):  # 1e999 parses as infinity
                raise BadRequest(f"{where}.{field[:60]} holds a number that is not finite")
            allowed = RECORD_FIELDS.get(field)
            if allowed is None:
                continue
            # bool is an int in Python, not in JSON: true is no segment_id.
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                wanted = " or ".join(_JSON_TYPES[t] for t in allowed)
                raise BadRequest(f"{where}.{field} must be {wanted} or null, got {_json_type(value)}")
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


def check_secret(secret: str | None) -> str:
    """``secret``, or ``ValueError`` when it is missing, empty or only whitespace."""
    if not secret or not secret.strip():
        raise ValueError("no signing secret: pass --secret or set WEBHOOK_SECRET to a non-blank value (refusing "
                         "to accept unsigned deliveries or ones signed with an empty or blank key)")
    return secret


def make_handler(secret: str, state: Path, out: Path | None):
    """The request handler class bound to one secret and store."""
    check_secret(secret)
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

        def _not_allowed(self):
            self._answer(405, {"error": "only POST delivers labels"})

        do_GET = do_PUT = do_PATCH = do_DELETE = _not_allowed

        def do_POST(self):
            try:
                self._deliver()
            except Exception:  # noqa: BLE001 - answered, never a dropped connection; the sender retries a 5xx
                traceback.print_exc(file=sys.stderr)
                self._answer(500, {"error": "internal error; nothing was applied"})

        def _deliver(self):
            length = self.headers.get("Content-Length", "")
            if not (length.isascii() and length.isdigit()):
                return self._answer(411, {"error": "Content-Length required"})
            if int(length) > MAX_BODY_BYTES:
                self.close_connection = True  # the body is not read
                return self._answer(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            body = self.rfile.read(int(length))
            media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return self._answer(415, {"error": "Content-Type must be application/json"})
            key = self.headers.get(IDEMPOTENCY_HEADER, "")
            try:
                if not key or len(key) > 200 or not key.isascii() or not key.isprintable():
                    raise BadRequest(f"{IDEMPOTENCY_HEADER} required (printable ASCII, at most 200 characters)")
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
    for name, n in collections.Counter(str(c.get("segment_name")) for c in current).most_common():
        print(f"  {name:22s} {n:>7,d}")
    by_priority = collections.Counter(str(c.get("priority")) for c in current)
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
    try:
        check_secret(secret)
    except ValueError as exc:
        parser.error(str(exc))
    state = args.state or (args.out.with_suffix(".sqlite") if args.out else None)
    if state is None:
        parser.error("--state (or --out) is required: the seen idempotency keys must survive a restart")
    serve(args.port, secret, state, args.out, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
