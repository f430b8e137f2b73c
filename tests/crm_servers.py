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
import re
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


#: Contact properties the test portal defines for the labels (HubSpot answers 400 PROPERTY_DOESNT_EXIST to any
#: other property a request writes).
HUBSPOT_PROPERTIES = frozenset({"segment_id", "segment_name", "clv_tier", "priority", "segment_action", "holdout"})
#: Properties of the test portal whose values are unique (``hasUniqueValue``): what ``idProperty`` may name.
HUBSPOT_UNIQUE_PROPERTIES = frozenset({"hs_object_id", "email", "customer_key", "email_sha256"})
#: Custom fields of the test org's Contact (Bulk API rejects a CSV header naming any other).
SALESFORCE_FIELDS = frozenset({"Segment_Id__c", "Segment_Name__c", "CLV_Tier__c", "Segment_Priority__c",
                               "Segment_Action__c", "Segment_Holdout__c"})
#: External id fields of the test org's Contact (what ``externalIdFieldName`` may name).
SALESFORCE_EXTERNAL_IDS = frozenset({"Customer_Key__c", "Shop_Customer_Id__c"})


class HubSpotServer(_Server):
    """HubSpot CRM v3 objects API for contacts, as documented:

    - ``POST /crm/v3/objects/contacts/batch/update``: updates existing records by
      id (``hs_object_id``) or by a unique property named in ``idProperty``;
      an unknown id is a per-input error (category ``OBJECT_NOT_FOUND``,
      ``context.ids``), answered 207 Multi-Status beside the updated records;
      nothing is ever created. An empty string clears a property.
    - ``POST /crm/v3/objects/contacts/batch/upsert``: "create or update records
      identified by a unique property value": an unknown value creates a
      contact (``new: true`` in its result).
    - Both: at most 100 inputs (400 above), ``idProperty`` must name a unique
      property (400 "non-unique property"), duplicate ids in one request are
      rejected (400), and only the portal's properties may be written (400
      ``PROPERTY_DOESNT_EXIST``).

    ``contacts`` holds the portal's records (id -> properties, the business's
    own fields included); ``created`` lists the ids of contacts created through
    the API and ``updates`` counts the inputs applied per contact.
    """

    def __init__(self, contacts: dict[str, dict] | None = None, reject: set[str] | None = None,
                 properties: frozenset[str] = HUBSPOT_PROPERTIES,
                 unique_properties: frozenset[str] = HUBSPOT_UNIQUE_PROPERTIES) -> None:
        super().__init__()
        self.properties = properties
        self.unique_properties = unique_properties
        self.reject = set(reject or ())
        self.contacts: dict[str, dict] = {str(k): dict(v) for k, v in (contacts or {}).items()}
        self.created: list[str] = []
        self.updates: Counter = Counter()
        self.inputs_received: Counter = Counter()
        self.writes: list[tuple[str, dict]] = []  # (contact id, properties written), in order
        self._next_id = 900_000_000

    def labelled(self) -> dict[str, dict]:
        """Contact id -> the label properties it holds now (non-empty ones only)."""
        out = {}
        for cid, props in self.contacts.items():
            labels = {k: v for k, v in props.items() if k in self.properties and v not in (None, "")}
            if labels:
                out[cid] = labels
        return out

    def _find(self, id_property: str, value: str) -> str | None:
        if id_property == "hs_object_id":
            return value if value in self.contacts else None
        for cid, props in self.contacts.items():
            if props.get(id_property) == value:
                return cid
        return None

    def _apply(self, cid: str, properties: dict) -> None:
        for k, v in properties.items():
            self.contacts[cid][k] = v  # "" clears the property
        self.updates[cid] += 1
        self.writes.append((cid, dict(properties)))

    def handle(self, method, path, headers, body):
        if not self.authorised(headers):
            return _json(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
        if method == "GET" and path.startswith("/crm/v3/objects/contacts"):
            return _json(200, {"results": []})
        routes = {"/crm/v3/objects/contacts/batch/update": "update", "/crm/v3/objects/contacts/batch/upsert": "upsert"}
        if method != "POST" or path not in routes:
            return _json(404, {"status": "error", "message": f"no route {method} {path}"})
        action = routes[path]
        inputs = json.loads(body)["inputs"]
        if len(inputs) > 100:
            return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Batch size exceeds the limit of 100"})
        ids = [str(item.get("id", "")) for item in inputs]
        if len(set(ids)) != len(ids) or not all(ids):
            return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Duplicate or empty IDs found in batch input"})
        for item in inputs:
            id_property = item.get("idProperty") or "hs_object_id"
            if action == "upsert" and not item.get("idProperty"):
                return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": "idProperty is required for upsert"})
            if id_property not in self.unique_properties:
                return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"Unable to perform update/upsert by non-unique {id_property} property"})
            unknown = sorted(set(item.get("properties", {})) - self.properties)
            if unknown:
                return _json(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"Property values were not valid: PROPERTY_DOESNT_EXIST {unknown}"})
        results, errors, missing = [], [], []
        for item in inputs:
            key = str(item["id"])
            self.inputs_received[key] += 1
            trace = item.get("objectWriteTraceId")
            if key in self.reject:
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Property values were not valid",
                               "context": {"objectWriteTraceId": [trace]}})
                continue
            id_property = item.get("idProperty") or "hs_object_id"
            cid = self._find(id_property, key)
            new = False
            if cid is None:
                if action == "update":
                    missing.append(key)
                    continue
                self._next_id += 1
                cid, new = str(self._next_id), True
                self.contacts[cid] = {id_property: key}
                self.created.append(cid)
            self._apply(cid, item.get("properties", {}))
            result = {"id": cid, "properties": dict(self.contacts[cid]), "objectWriteTraceId": trace}
            if action == "upsert":
                result["new"] = new
            results.append(result)
        if missing:
            errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                           "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
                                      "Check that ids are valid.", "context": {"ids": missing}})
        if errors:
            return _json(207, {"status": "COMPLETE", "results": results, "errors": errors,
                               "numErrors": len(errors)})
        return _json(200, {"status": "COMPLETE", "results": results})

    def max_requests_in_window(self, window_s: float = 10.0) -> int:
        times = [t for m, p, t in self.requests if "/batch/" in p]
        return max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)


_SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")


class SalesforceServer(_Server):
    """Bulk API 2.0 ingest for Contact, as documented:

    create job (``insert``/``update``/``upsert``/``delete``; ``upsert`` needs an
    ``externalIdFieldName`` that is an external id field), PUT the CSV while
    ``Open`` (only the object's fields; ``update`` needs an ``Id`` column,
    ``upsert`` the external id column), PATCH ``UploadComplete``, poll, results.
    Per row: ``update`` rejects a blank (``MISSING_ARGUMENT``), malformed
    (``MALFORMED_ID``) or unknown Id (``INVALID_CROSS_REFERENCE_KEY``) and
    never creates; ``upsert`` creates when no record holds the external id,
    which fails without the required ``LastName`` (``REQUIRED_FIELD_MISSING``).
    An empty value is ignored by an update; ``#N/A`` sets the field to null.

    ``records`` holds the org's Contacts (Id -> fields); ``created`` lists the
    Ids of records created through the API.
    """

    version = "v62.0"

    def __init__(self, records: dict[str, dict] | None = None, reject: set[str] | None = None,
                 fields: frozenset[str] = SALESFORCE_FIELDS,
                 external_ids: frozenset[str] = SALESFORCE_EXTERNAL_IDS) -> None:
        super().__init__()
        self.fields = fields
        self.external_ids = external_ids
        self.reject = set(reject or ())
        self.jobs: dict[str, dict] = {}
        self.records: dict[str, dict] = {k: dict(v) for k, v in (records or {}).items()}
        self.created: list[str] = []
        self.updates: Counter = Counter()
        self._next = 0

    def labelled(self) -> dict[str, dict]:
        """Id -> the label fields it holds now (non-null ones only)."""
        out = {}
        for rid, row in self.records.items():
            labels = {k: v for k, v in row.items() if k in self.fields and v not in (None, "")}
            if labels:
                out[rid] = labels
        return out

    def _write(self, rid: str, row: dict, skip: set[str]) -> None:
        for k, v in row.items():
            if k in skip or v == "":
                continue  # an empty value is ignored by an update
            self.records[rid][k] = None if v == "#N/A" else v
        self.updates[rid] += 1

    def _process(self, job: dict) -> None:
        for row in job["rows"]:
            if job["operation"] == "update":
                rid = row.get("Id", "")
                error = ("MISSING_ARGUMENT:Id not specified in an update call" if not rid else
                         "MALFORMED_ID:Contact ID: id value of incorrect type" if not _SALESFORCE_ID.match(rid) else
                         "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id" if rid not in self.records else
                         "FIELD_CUSTOM_VALIDATION_EXCEPTION" if rid in self.reject else None)
                if error:
                    job["failed"].append({"sf__Id": "", "sf__Error": error, **row})
                    continue
                self._write(rid, row, {"Id"})
                job["done"].append({"sf__Id": rid, "sf__Created": "false", **row})
            elif job["operation"] == "upsert":
                field = job["externalIdFieldName"]
                value = row.get(field, "")
                rid = next((r for r, rec in self.records.items() if rec.get(field) == value), None)
                if value in self.reject:
                    job["failed"].append({"sf__Id": "", "sf__Error": "FIELD_CUSTOM_VALIDATION_EXCEPTION", **row})
                    continue
                if rid is None:
                    if not row.get("LastName") or row["LastName"] == "#N/A":
                        job["failed"].append({"sf__Id": "", "sf__Error": "REQUIRED_FIELD_MISSING:Required fields "
                                              "are missing: [LastName]", **row})
                        continue
                    self._next += 1
                    rid = f"003TEST{self._next:011d}"
                    self.records[rid] = {field: value}
                    self.created.append(rid)
                    self._write(rid, row, set())
                    job["done"].append({"sf__Id": rid, "sf__Created": "true", **row})
                    continue
                self._write(rid, row, {field})
                job["done"].append({"sf__Id": rid, "sf__Created": "false", **row})
            else:
                job["failed"].append({"sf__Id": "", "sf__Error": "not supported by this fake", **row})

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
            operation = spec.get("operation")
            if operation not in ("insert", "update", "upsert", "delete") or spec.get("contentType") != "CSV":
                return _json(400, [{"errorCode": "INVALIDJOB", "message": "bad job spec"}])
            if operation == "upsert" and spec.get("externalIdFieldName") not in self.external_ids:
                return _json(400, [{"errorCode": "INVALIDJOB",
                                    "message": "externalIdFieldName must name an external id field for upsert"}])
            job_id = "750" + uuid.uuid4().hex[:15]
            self.jobs[job_id] = {"id": job_id, "state": "Open", "object": spec["object"], "operation": operation,
                                 "externalIdFieldName": spec.get("externalIdFieldName"), "rows": [], "failed": [],
                                 "done": [], "polls": 0}
            return _json(200, {k: v for k, v in self.jobs[job_id].items() if k in ("id", "state", "object",
                                                                                    "operation")})
        job = self.jobs.get(rest[0])
        if job is None:
            return _json(404, [{"errorCode": "NOT_FOUND"}])
        if method == "PUT" and rest[1:] == ["batches"]:
            if job["state"] != "Open" or headers.get("Content-Type") != "text/csv":
                return _json(400, [{"errorCode": "INVALIDJOBSTATE"}])
            reader = csv.DictReader(io.StringIO(body.decode()))
            columns = set(reader.fieldnames or ())
            unknown = sorted(columns - self.fields - self.external_ids - {"Id", "LastName"})
            if unknown:
                return _json(400, [{"errorCode": "INVALIDBATCH", "message": f"Field name not found : {unknown}"}])
            needed = "Id" if job["operation"] in ("update", "delete") else job["externalIdFieldName"]
            if needed and needed not in columns:
                return _json(400, [{"errorCode": "INVALIDBATCH", "message": f"column {needed} is required"}])
            job["rows"].extend(reader)
            return 201, {}, b""
        if method == "PATCH" and len(rest) == 1:
            if json.loads(body).get("state") != "UploadComplete" or job["state"] != "Open":
                return _json(400, [{"errorCode": "INVALIDJOBSTATE"}])
            job["state"] = "UploadComplete"
            return _json(200, {k: v for k, v in job.items() if k in ("id", "state", "object")})
        if method == "GET" and len(rest) == 1:
            job["polls"] += 1
            if job["state"] == "UploadComplete" and job["polls"] >= 2:  # processing takes a poll
                self._process(job)
                job["state"] = "JobComplete"
            return _json(200, {k: v for k, v in job.items() if k in ("id", "state", "object")})
        if method == "GET" and rest[1] in ("failedResults", "unprocessedrecords", "successfulResults"):
            if job["state"] != "JobComplete":
                return _json(400, [{"errorCode": "INVALIDJOBSTATE"}])
            rows = {"failedResults": job["failed"], "successfulResults": job["done"]}.get(rest[1], [])
            lead = {"failedResults": ["sf__Id", "sf__Error"], "successfulResults": ["sf__Id", "sf__Created"]}.get(
                rest[1], [])
            buf = io.StringIO()
            fields = [*lead, *(job["rows"][0].keys() if job["rows"] else ["Id"])]
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


def write_identity_map(url: str, date, rows) -> None:
    """``identity_map`` rows of ``date`` by hand: ``(source_system, source_id, customer_key)`` each.

    What ``resolve_identity`` leaves for a push to match CRM records with (a CRM
    export loaded as identity records of its own source system).
    """
    import pandas as pd

    from include.runtime.warehouse import Warehouse

    frame = pd.DataFrame(list(rows), columns=["source_system", "source_id", "customer_key"])
    frame.insert(0, "as_of_date", date)
    frame["cluster_confidence"], frame["match_method"] = 1.0, "test"
    with Warehouse(url) as wh:
        wh.ensure_schema()
        wh.replace_partition("identity_map", frame, {"as_of_date": date})
