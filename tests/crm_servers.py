"""Loopback HTTP servers that enforce the documented contracts of each CRM target.

They are strict where the vendors are (paths, bearer auth, batch-size limit,
content types, job states, signatures) and can inject the failures a real push
meets: 429 with ``Retry-After``, a 500 mid-push, 207 partial failures, a
response that never comes (for kill-and-resume tests).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from include.crm.contract import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, MalformedSignature, verify_signature


class _Server:
    """Run a handler class on 127.0.0.1:<free port> in a thread."""

    token = "test-token"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, float]] = []
        self.faults: dict[int, tuple[int, dict]] = {}  # request number -> (status, headers)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer.lock:
                    outer.requests.append((method, self.path, time.monotonic()))
                    n = len(outer.requests)
                    fault = outer.faults.pop(n, None)
                if fault:
                    status, headers = fault
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                status, headers, out = outer.handle(method, self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_OPTIONS(self):
                self._handle("OPTIONS")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_request(self, number: int, status: int, headers: dict | None = None) -> None:
        """Answer the ``number``-th request (1-based, counting every request) with ``status``."""
        self.faults[number] = (status, headers or {})

    def authorised(self, headers: dict) -> bool:
        return headers.get("Authorization") == f"Bearer {self.token}"

    def handle(self, method, path, headers, body):  # pragma: no cover - overridden
        raise NotImplementedError


def _json(status: int, obj) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


#: Contact properties the test portal defines (HubSpot answers 400 PROPERTY_DOESNT_EXIST to any other).
HUBSPOT_PROPERTIES = frozenset({"segment_id", "segment_name", "clv_tier", "priority", "segment_action", "holdout"})
#: Custom fields of the test org's Contact (Bulk API rejects a CSV header naming any other).
SALESFORCE_FIELDS = frozenset({"Customer_Key__c", "Segment_Id__c", "Segment_Name__c", "CLV_Tier__c",
                               "Segment_Priority__c", "Segment_Action__c", "Segment_Holdout__c"})


class HubSpotServer(_Server):
    """``POST /crm/v3/objects/{type}/batch/upsert``: <= 100 inputs, unique ``idProperty``, 207 on partial failure,
    only the portal's properties (:data:`HUBSPOT_PROPERTIES`)."""

    def __init__(self, id_property: str = "customer_key", reject: set[str] | None = None,
                 properties: frozenset[str] = HUBSPOT_PROPERTIES) -> None:
        super().__init__()
        self.id_property = id_property
        self.properties = properties
        self.reject = set(reject or ())
        self.contacts: dict[str, dict] = {}
        self.inputs_received: Counter = Counter()

    def handle(self, method, path, headers, body):
        if not self.authorised(headers):
            return _json(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
        if method == "GET" and path.startswith("/crm/v3/objects/contacts"):
            return _json(200, {"results": []})
        if method != "POST" or path != "/crm/v3/objects/contacts/batch/upsert":
            return _json(404, {"status": "error", "message": f"no route {method} {path}"})
        inputs = json.loads(body)["inputs"]
        if len(inputs) > 100:
            return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Batch size exceeds the limit of 100"})
        results, errors = [], []
        for item in inputs:
            if item.get("idProperty") != self.id_property or not item.get("id"):
                return _json(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "bad idProperty"})
            unknown = sorted(set(item.get("properties", {})) - self.properties)
            if unknown:
                return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"Property values were not valid: PROPERTY_DOESNT_EXIST {unknown}"})
            self.inputs_received[item["id"]] += 1
            if item["id"] in self.reject:
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Property values were not valid",
                               "context": {"objectWriteTraceId": [item["objectWriteTraceId"]]}})
                continue
            self.contacts[item["id"]] = item["properties"]
            results.append({"id": str(abs(hash(item["id"])) % 10**9), "properties": item["properties"]})
        if errors:
            return _json(207, {"status": "COMPLETE", "results": results, "errors": errors,
                               "numErrors": len(errors)})
        return _json(200, {"status": "COMPLETE", "results": results})

    def max_requests_in_window(self, window_s: float = 10.0) -> int:
        times = [t for m, p, t in self.requests if p.endswith("batch/upsert")]
        return max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)


class SalesforceServer(_Server):
    """Bulk API 2.0 ingest: create job, PUT CSV while Open, PATCH UploadComplete, poll, results."""

    version = "v62.0"

    def __init__(self, external_id: str = "Customer_Key__c", reject: set[str] | None = None,
                 fields: frozenset[str] = SALESFORCE_FIELDS) -> None:
        super().__init__()
        self.external_id = external_id
        self.fields = fields
        self.reject = set(reject or ())
        self.jobs: dict[str, dict] = {}
        self.records: dict[str, dict] = {}

    def handle(self, method, path, headers, body):
        if not self.authorised(headers):
            return _json(401, [{"errorCode": "INVALID_SESSION_ID"}])
        base = f"/services/data/{self.version}/jobs/ingest"
        if not path.startswith(base):
            return _json(404, [{"errorCode": "NOT_FOUND"}])
        rest = path[len(base):].strip("/").split("/")
        if method == "GET" and rest == [""]:
            return _json(200, {"records": []})
        if method == "POST" and rest == [""]:
            spec = json.loads(body)
            if spec.get("operation") != "upsert" or spec.get("externalIdFieldName") != self.external_id \
                    or spec.get("contentType") != "CSV":
                return _json(400, [{"errorCode": "INVALIDJOB", "message": "bad job spec"}])
            job_id = "750" + uuid.uuid4().hex[:15]
            self.jobs[job_id] = {"id": job_id, "state": "Open", "object": spec["object"], "rows": [], "failed": [],
                                 "polls": 0}
            return _json(200, self.jobs[job_id])
        job = self.jobs.get(rest[0])
        if job is None:
            return _json(404, [{"errorCode": "NOT_FOUND"}])
        if method == "PUT" and rest[1:] == ["batches"]:
            if job["state"] != "Open" or headers.get("Content-Type") != "text/csv":
                return _json(400, [{"errorCode": "INVALIDJOBSTATE"}])
            reader = csv.DictReader(io.StringIO(body.decode()))
            unknown = sorted(set(reader.fieldnames or ()) - self.fields - {self.external_id})
            if unknown:
                return _json(400, [{"errorCode": "INVALIDBATCH", "message": f"Field name not found : {unknown}"}])
            job["rows"].extend(reader)
            return 201, {}, b""
        if method == "PATCH" and len(rest) == 1:
            if json.loads(body).get("state") != "UploadComplete" or job["state"] != "Open":
                return _json(400, [{"errorCode": "INVALIDJOBSTATE"}])
            job["state"] = "UploadComplete"
            return _json(200, job)
        if method == "GET" and len(rest) == 1:
            job["polls"] += 1
            if job["state"] == "UploadComplete" and job["polls"] >= 2:  # processing takes a poll
                for row in job["rows"]:
                    key = row[self.external_id]
                    if key in self.reject:
                        job["failed"].append({"sf__Id": "", "sf__Error": "FIELD_CUSTOM_VALIDATION_EXCEPTION", **row})
                    else:
                        self.records[key] = row
                job["state"] = "JobComplete"
            return _json(200, {k: v for k, v in job.items() if k in ("id", "state", "object")})
        if method == "GET" and rest[1] in ("failedResults", "unprocessedrecords", "successfulResults"):
            rows = job["failed"] if rest[1] == "failedResults" else []
            buf = io.StringIO()
            fields = ["sf__Id", "sf__Error", *(job["rows"][0].keys() if job["rows"] else [self.external_id])]
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
            return 200, {"Content-Type": "text/csv"}, buf.getvalue().encode()
        return _json(404, [{"errorCode": "NOT_FOUND"}])


class WebhookReceiver(_Server):
    """Checks the HMAC signature, drops repeated idempotency keys, stores records by customer key."""

    def __init__(self, secret: str = "s3cret") -> None:
        super().__init__()
        self.secret = secret
        self.deliveries: dict[str, list[dict]] = {}  # idempotency key -> records
        self.duplicates = 0
        self.bad_signatures = 0
        self.hold_after: int | None = None  # apply then never answer the request after this many deliveries
        self.held = threading.Event()

    def handle(self, method, path, headers, body):
        if method == "OPTIONS":
            return 204, {}, b""
        key = headers.get(IDEMPOTENCY_HEADER)
        if not key:
            return _json(400, {"error": "Idempotency-Key required"})
        try:
            valid = verify_signature(self.secret, body, headers.get(SIGNATURE_HEADER), key)
        except MalformedSignature as exc:
            return _json(400, {"error": str(exc)})
        if not valid:
            self.bad_signatures += 1
            return _json(401, {"error": "bad signature"})
        if key in self.deliveries:
            self.duplicates += 1
            return _json(200, {"status": "duplicate"})
        self.deliveries[key] = json.loads(body)["records"]
        if self.hold_after is not None and len(self.deliveries) > self.hold_after:
            self.held.set()
            time.sleep(3600)  # the caller is killed while waiting for this answer
        return _json(202, {"status": "accepted"})

    def customers(self) -> Counter:
        return Counter(r["customer_key"] for recs in self.deliveries.values() for r in recs)


class HoldingProxy(_Server):
    """Forwards every request to ``upstream``; after ``hold_after`` answered POSTs it forwards the next one
    (the upstream applies it) and never answers: the caller is killed while waiting.

    ``upstream`` can be changed between requests (a restarted receiver on a new port).
    """

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.hold_after: int | None = None
        self.posts = 0
        self.held = threading.Event()

    def handle(self, method, path, headers, body):
        import requests

        forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
        response = requests.request(method, self.upstream + path, headers=forwarded, data=body, timeout=30)
        if method == "POST":
            with self.lock:
                self.posts += 1
                hold = self.hold_after is not None and self.posts > self.hold_after
            if hold:
                self.held.set()
                time.sleep(3600)
        return response.status_code, {"Content-Type": response.headers.get("Content-Type", "")}, response.content


class ReceiverProcess:
    """``scripts/webhook_receiver.py`` in a subprocess on a free loopback port, with its SQLite state."""

    def __init__(self, state, secret: str | None = "s3cret", extra_args: tuple[str, ...] = ()) -> None:
        self.state = state
        self.secret = secret
        self.extra_args = extra_args
        self.proc = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ReceiverProcess:
        import os
        import socket
        import subprocess
        import sys

        import requests

        from tests.conftest import ROOT

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_SECRET"}
        if self.secret is not None:
            env["WEBHOOK_SECRET"] = self.secret
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "webhook_receiver.py"), "--port", str(self.port),
             "--state", str(self.state), *self.extra_args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            try:
                requests.options(self.url, timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("receiver did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.proc is not None:
            self.proc.stdout.close()
            self.proc.stderr.close()

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def deliveries(self) -> list[tuple[str, str, list[dict]]]:
        """``(idempotency key, label date, records)`` of every batch the receiver accepted."""
        import sqlite3

        with sqlite3.connect(self.state) as conn:
            rows = conn.execute("SELECT idempotency_key, label_date, body FROM deliveries").fetchall()
        return [(k, d, json.loads(b)["records"]) for k, d, b in rows]

    def current(self) -> dict[str, tuple[str, dict]]:
        """Customer key -> (label date, fields) the receiver holds now."""
        import sqlite3

        with sqlite3.connect(self.state) as conn:
            rows = conn.execute("SELECT customer_key, label_date, fields FROM customers").fetchall()
        return {k: (d, json.loads(f)) for k, d, f in rows}
