"""A local webhook receiver for the demo: checks signatures, drops repeated batches, keeps deliveries.

    python scripts/webhook_receiver.py --port 8765 --secret S --out deliveries.jsonl
    python scripts/webhook_receiver.py --report deliveries.jsonl

This is what a receiver of the segment webhook has to do: recompute the
HMAC-SHA256 signature over the raw body (``include.crm.verify_signature``),
refuse stale timestamps, and keep the first delivery of each idempotency key.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.crm.contract import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature  # noqa: E402


def serve(port: int, secret: str, out: Path) -> None:
    seen: set[str] = set()
    lock = threading.Lock()

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
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not verify_signature(secret, body, self.headers.get(SIGNATURE_HEADER, "")):
                return self._answer(401, {"error": "bad signature"})
            key = self.headers.get(IDEMPOTENCY_HEADER, "")
            with lock:
                if key in seen:
                    return self._answer(200, {"status": "duplicate"})
                seen.add(key)
                with open(out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"idempotency_key": key, "records": json.loads(body)["records"]}) + "\n")
            self._answer(202, {"status": "accepted"})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def report(path: Path) -> None:
    batches = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    records = [r for b in batches for r in b["records"]]
    by_segment = collections.Counter(r["segment_name"] for r in records)
    by_priority = collections.Counter(r["priority"] for r in records)
    print(f"Webhook receiver: {len(batches)} signed batches, {len(records):,} customer updates, "
          f"{len({r['customer_key'] for r in records}):,} distinct customers")
    for name, n in by_segment.most_common():
        print(f"  {name:22s} {n:>7,d}")
    print("  by priority: " + ", ".join(f"{k} {v:,}" for k, v in by_priority.most_common()))
    if records:
        print(f"  fields sent: {', '.join(records[0])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--secret", default="")
    parser.add_argument("--out", type=Path, default=Path("deliveries.jsonl"))
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    if args.report:
        report(args.report)
    else:
        serve(args.port, args.secret, args.out)
