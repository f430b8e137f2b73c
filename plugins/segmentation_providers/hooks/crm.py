"""CRM hooks: connection, auth, batching, retries and ``test_connection`` per target.

One hook per target, split the way Airflow's providers split them (the
operator only holds arguments and builds the hook in ``execute``):

- :class:`HubSpotHook`: CRM v3 ``batch/update`` of the portal's own records by
  ``hs_object_id`` (or a unique property); ``batch/upsert`` only in create mode;
- :class:`SalesforceBulkHook`: Bulk API 2.0 ingest job, ``operation=update`` by
  ``Id`` (or ``upsert`` on an external id field the business owns);
- :class:`WebhookHook`: signed JSON batches with an idempotency key;
- :class:`OutboxHook`: the ``crm_outbox`` warehouse table (embedded default).

Every hook answers ``push(batch) -> BatchOutcome`` with the record ids the
target acknowledged and the ones it rejected (with the reason), and the
records it created (none unless create mode is on). Which records a target
holds is configured by :class:`include.crm.matching.Matching`, read from the
connection's extras by :meth:`matching_config`. Credentials come only from the
Airflow connection and are never logged.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections import deque
from typing import Any

from airflow.sdk import BaseHook

from include.crm.contract import (
    IDEMPOTENCY_HEADER,
    PUSH_FIELDS,
    SIGNATURE_HEADER,
    Batch,
    BatchOutcome,
    deliver_to_outbox,
    payload,
    sign,
)
from include.crm.matching import CrmMatchingError

log = logging.getLogger(__name__)


class CrmHttpError(RuntimeError):
    """The target refused a request for good (after retries, or a 4xx that retrying cannot fix)."""

    def __init__(self, message: str, status_code: int, attempts: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts


class _HttpCrmHook(BaseHook):
    """Shared HTTP plumbing: a session, retries with backoff honouring ``Retry-After``, a rate limiter."""

    conn_type = "http"
    max_batch_size = 100

    def __init__(self, conn_id: str, *, max_retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, timeout_s: float = 30.0,
                 max_requests_per_window: int | None = None, window_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.max_requests_per_window = max_requests_per_window
        self.window_s = window_s
        self._sent: deque[float] = deque()
        self._session = None
        self._conn = None

    # -- connection ------------------------------------------------------
    @property
    def connection(self):
        if self._conn is None:
            self._conn = self.get_connection(self.conn_id)
        return self._conn

    @property
    def base_url(self) -> str:
        conn = self.connection
        host = (conn.host or "").rstrip("/")
        if not host.startswith(("http://", "https://")):
            scheme = conn.schema or "https"
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        return host

    def auth_headers(self) -> dict[str, str]:
        token = self.connection.password
        if not token:
            raise ValueError(f"connection '{self.conn_id}' has no password (the API token)")
        return {"Authorization": f"Bearer {token}"}

    def get_conn(self):
        import requests

        if self._session is None:
            self._session = requests.Session()
        return self._session

    # -- requests with retries -----------------------------------------------
    def _throttle(self) -> None:
        if not self.max_requests_per_window:
            return
        now = time.monotonic()
        while self._sent and now - self._sent[0] >= 1.05 * self.window_s:
            self._sent.popleft()
        if len(self._sent) >= self.max_requests_per_window:
            # A 5% margin: the server's clock starts its window when the request arrives.
            wait = 1.05 * self.window_s - (now - self._sent[0])
            log.info("rate limit: %d requests in %.0f s, waiting %.2f s", len(self._sent), self.window_s, wait)
            time.sleep(max(wait, 0))
        self._sent.append(time.monotonic())

    def _retry_delay(self, response, attempt: int) -> float:
        header = response.headers.get("Retry-After") if response is not None else None
        if header:
            try:
                return min(float(header), self.max_backoff_s)
            except ValueError:
                pass
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any):
        """Send with retries on connection errors, 429 and 5xx; return ``(response, attempts)``."""
        import requests

        url = path if path.startswith("http") else f"{self.base_url}{path}"
        headers = {**self.auth_headers(), **kwargs.pop("headers", {})}
        attempt = 0
        while True:
            attempt += 1
            self._throttle()
            response = None
            try:
                response = self.get_conn().request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
            except requests.RequestException as exc:
                if attempt > self.max_retries:
                    raise CrmHttpError(f"{method} {path}: {type(exc).__name__}", 0, attempt) from exc
                delay = self._retry_delay(None, attempt)
                log.warning("%s %s: %s; retry %d/%d in %.1f s", method, path, type(exc).__name__, attempt,
                            self.max_retries, delay)
                time.sleep(delay)
                continue
            if response.status_code in expect:
                return response, attempt
            retryable = response.status_code == 429 or response.status_code >= 500
            if not retryable or attempt > self.max_retries:
                raise CrmHttpError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}",
                                   response.status_code, attempt)
            delay = self._retry_delay(response, attempt)
            log.warning("%s %s: HTTP %d; retry %d/%d in %.1f s", method, path, response.status_code, attempt,
                        self.max_retries, delay)
            time.sleep(delay)

    #: Connection extras that configure :class:`include.crm.matching.Matching`.
    MATCHING_EXTRAS = ("match_source_system", "match_key", "create_missing", "create_id_property")

    def matching_config(self) -> dict[str, Any]:
        """The matching settings in the connection's extras (``match_source_system``, ``match_key``, ...)."""
        extra = self.connection.extra_dejson
        return {k: extra[k] for k in self.MATCHING_EXTRAS if k in extra}

    def push(self, batch: Batch) -> BatchOutcome:
        raise NotImplementedError

    def probe(self) -> None:
        """A cheap authenticated request that raises when the target is unreachable."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.probe()
        except Exception as exc:  # noqa: BLE001 - reported to the UI, not raised
            return False, str(exc)
        return True, "Connection successfully tested"


class HubSpotHook(_HttpCrmHook):
    """HubSpot CRM v3: the portal's own records get the labels through ``batch/update``; nothing is created.

    ``POST /crm/v3/objects/{object_type}/batch/update`` by the record id
    (``hs_object_id``, the contact id of the export loaded as identity records),
    or by a unique property given as ``idProperty``. HubSpot answers an
    unknown id with a per-input ``OBJECT_NOT_FOUND`` error (207 multi-status);
    it is reported as not found and retried next run, never created. A clear
    sets every label property to the empty string (HubSpot clears a property
    that way). In create mode (``create_missing``, off by default), a
    customer without a record gets one through ``batch/upsert`` with
    ``idProperty = create_id_property`` (a unique property holding the
    customer key) and the label properties, nothing else.

    Connection: host (default ``https://api.hubapi.com``), password = private
    app token (Bearer). Extras: ``object_type`` (default ``contacts``),
    ``id_property`` (default ``hs_object_id``; else a unique-value property
    holding the matched ids, e.g. ``email_sha256``), ``match_source_system``
    (default ``hubspot``) or ``match_key``, ``create_missing``,
    ``create_id_property``, ``max_requests_per_10s`` (default 100, the
    Free/Starter private-app limit). At most 100 inputs per request.
    """

    conn_name_attr = "hubspot_conn_id"
    default_conn_name = "crm_hubspot"
    hook_name = "Segments to HubSpot"
    max_batch_size = 100

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        if self.max_requests_per_window is None:
            self.max_requests_per_window = int(self.connection.extra_dejson.get("max_requests_per_10s", 100))

    @property
    def base_url(self) -> str:
        return super().base_url if self.connection.host else "https://api.hubapi.com"

    def _send(self, path: str, inputs: list[dict]) -> tuple[Any, int, dict[str, str], list[str], list[str]]:
        """POST one batch; return the response, attempts, failed ids with reasons, not-found ids, created ids."""
        response, attempts = self.request("POST", path, json={"inputs": inputs}, expect=(200, 201, 207))
        body = response.json()
        failed: dict[str, str] = {}
        not_found: list[str] = []
        for error in body.get("errors", []):
            context = error.get("context") or {}
            reason = f"{error.get('category', 'ERROR')}: {error.get('message', '')}"[:300]
            ids = list(context.get("objectWriteTraceId", [])) + list(context.get("ids", []))
            for record_id in ids:
                failed[str(record_id)] = reason
                if error.get("category") == "OBJECT_NOT_FOUND":
                    not_found.append(str(record_id))
        created = [str(r.get("objectWriteTraceId") or r.get("id")) for r in body.get("results", []) if r.get("new")]
        return response, attempts, failed, not_found, created

    def push(self, batch: Batch) -> BatchOutcome:
        extra = self.connection.extra_dejson
        object_type = extra.get("object_type", "contacts")
        id_property = extra.get("id_property", "hs_object_id")
        create_property = extra.get("create_id_property", "customer_key")
        records = payload(batch.records)
        if len(records) > self.max_batch_size:
            raise ValueError(f"HubSpot batch update takes at most {self.max_batch_size} inputs, got {len(records)}")
        created_kind = batch.records["matched_by"].astype(str).str.startswith("created:").to_numpy()
        updates, upserts = [], []
        for record, is_created in zip(records, created_kind, strict=True):
            record_id = record["record_id"]
            item = {"id": record_id, "objectWriteTraceId": record_id,
                    "properties": {f: _text(record[f]) for f in PUSH_FIELDS}}
            if is_created:
                upserts.append({**item, "idProperty": create_property})
            else:
                updates.append({**item, "idProperty": id_property} if id_property != "hs_object_id" else item)
        failed: dict[str, str] = {}
        not_found: list[str] = []
        created: list[str] = []
        attempts, status = 0, 200
        for path, inputs in ((f"/crm/v3/objects/{object_type}/batch/update", updates),
                             (f"/crm/v3/objects/{object_type}/batch/upsert", upserts)):
            if not inputs:
                continue
            response, a, f, nf, c = self._send(path, inputs)
            attempts += a
            status = max(status, response.status_code)
            failed.update(f)
            not_found += nf
            created += c
        acked = [r["record_id"] for r in records if r["record_id"] not in failed]
        detail = f"{len(failed)} inputs rejected" if failed else ""
        return BatchOutcome(acked, failed, status, attempts, detail, created=created, not_found=not_found)

    def probe(self) -> None:
        object_type = self.connection.extra_dejson.get("object_type", "contacts")
        self.request("GET", f"/crm/v3/objects/{object_type}?limit=1")


def _text(value: Any) -> str:
    """A property value as text; booleans as ``true``/``false``; ``None`` (a cleared field) as ``''``."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


class SalesforceBulkHook(_HttpCrmHook):
    """Salesforce Bulk API 2.0 ingest: one ``update`` job per batch by ``Id`` (CSV, UploadComplete, poll, results).

    The labels go to the org's own records: ``operation=update`` with the
    record's ``Id`` (the Contact Ids of the export loaded as identity records of
    ``match_source_system``, default ``salesforce``). Salesforce rejects an
    unknown Id per row (``INVALID_CROSS_REFERENCE_KEY``), so nothing is created.
    With ``external_id_field`` set, the job is an ``upsert`` on that field,
    which must hold ids the business owns (e.g. its shop's customer numbers,
    matched from identity records of ``match_source_system``); Salesforce would
    create a record for an unknown value, which for a Contact fails for the
    missing ``LastName`` (the push never sends names), and any record it does
    create is counted and reported. Empty CSV values are ignored by an update,
    so an empty or cleared field is sent as ``#N/A`` (null).

    Connection: host = instance URL, password = OAuth access token (Bearer).
    Extras: ``object`` (default ``Contact``), ``external_id_field`` (optional),
    ``match_source_system``, ``api_version`` (default ``v62.0``),
    ``field_map`` (our field -> Salesforce field, default ``<Field>__c``).
    """

    conn_name_attr = "salesforce_conn_id"
    default_conn_name = "crm_salesforce"
    hook_name = "Segments to Salesforce (Bulk API 2.0)"
    max_batch_size = 10_000  # Salesforce splits jobs into 10,000-record internal batches
    #: Bulk API 2.0: an empty value is ignored by an update; this sets the field to null.
    NULL = "#N/A"

    def __init__(self, conn_id: str = default_conn_name, *, poll_interval_s: float = 2.0,
                 max_polls: int = 300, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self.poll_interval_s = poll_interval_s
        self.max_polls = max_polls

    def matching_config(self) -> dict[str, Any]:
        config = super().matching_config()
        if config.get("create_missing") not in (None, False, "false", "False"):
            raise CrmMatchingError("Salesforce: create_missing is not supported: a Contact needs LastName, "
                                   "which the push never sends (it sends labels only)")
        return config

    def _settings(self) -> tuple[str, str, str | None, str, dict[str, str]]:
        """Object, key column, external id field (``None``: update by Id), API version, field map."""
        extra = self.connection.extra_dejson
        external_id = extra.get("external_id_field") or None
        field_map = {"segment_id": "Segment_Id__c", "segment_name": "Segment_Name__c",
                     "clv_tier": "CLV_Tier__c", "priority": "Segment_Priority__c",
                     "segment_action": "Segment_Action__c", "holdout": "Segment_Holdout__c",
                     **extra.get("field_map", {})}
        return (extra.get("object", "Contact"), external_id or "Id", external_id, extra.get("api_version", "v62.0"),
                field_map)

    def _cell(self, value: Any) -> str:
        text = _text(value)
        return self.NULL if text == "" else text

    def push(self, batch: Batch) -> BatchOutcome:
        obj, key_column, external_id, version, field_map = self._settings()
        base = f"/services/data/{version}/jobs/ingest"
        records = payload(batch.records)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[key_column, *(field_map[f] for f in PUSH_FIELDS)],
                                lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({key_column: r["record_id"], **{field_map[f]: self._cell(r[f]) for f in PUSH_FIELDS}})
        spec = {"object": obj, "operation": "upsert" if external_id else "update", "contentType": "CSV",
                "lineEnding": "LF", **({"externalIdFieldName": external_id} if external_id else {})}
        job, attempts = self.request("POST", base, expect=(200, 201), json=spec)
        job_id = job.json()["id"]
        _, a = self.request("PUT", f"{base}/{job_id}/batches", expect=(201,), data=buf.getvalue().encode(),
                            headers={"Content-Type": "text/csv"})
        attempts += a
        _, a = self.request("PATCH", f"{base}/{job_id}", json={"state": "UploadComplete"}, expect=(200,))
        attempts += a
        state = "UploadComplete"
        for _ in range(self.max_polls):
            info, _ = self.request("GET", f"{base}/{job_id}")
            state = info.json()["state"]
            if state in ("JobComplete", "Failed", "Aborted"):
                break
            time.sleep(self.poll_interval_s)
        if state != "JobComplete":
            raise CrmHttpError(f"Salesforce job {job_id} ended {state}", 0, attempts)
        failed_csv, _ = self.request("GET", f"{base}/{job_id}/failedResults/")
        failed, not_found = {}, []
        for row in csv.DictReader(io.StringIO(failed_csv.text)):
            error = row.get("sf__Error", "")
            failed[row[key_column]] = error[:300]
            # Update: an unknown Id. Upsert: no record holds the value and creating one failed.
            if error.startswith(("INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED", "REQUIRED_FIELD_MISSING")):
                not_found.append(row[key_column])
        unprocessed, _ = self.request("GET", f"{base}/{job_id}/unprocessedrecords/")
        for row in csv.DictReader(io.StringIO(unprocessed.text)):
            failed[row[key_column]] = "unprocessed"
        created = []
        if external_id:  # only an upsert can create
            done, _ = self.request("GET", f"{base}/{job_id}/successfulResults/")
            created = [row[key_column] for row in csv.DictReader(io.StringIO(done.text))
                       if row.get("sf__Created", "").lower() == "true"]
        acked = [r["record_id"] for r in records if r["record_id"] not in failed]
        return BatchOutcome(acked, failed, 200, attempts, f"job {job_id}", created=created, not_found=not_found)

    def probe(self) -> None:
        self.request("GET", f"/services/data/{self._settings()[3]}/jobs/ingest")


class WebhookHook(_HttpCrmHook):
    """Signed JSON batches to one URL.

    Connection: host = full URL, password = signing secret. Each request
    carries ``Idempotency-Key`` (the batch's content key: the same on a resend)
    and ``X-Segments-Signature: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<key>." + body)``
    (check it with :func:`include.crm.contract.verify_signature`). The body is
    ``{"batch_key", "label_date", "records"}``: a record keyed by its customer
    is ``{"customer_key", <fields>}``, one matched by a native id (extra
    ``match_source_system``) is ``{"record_id", "customer_key", <fields>}``; a
    clear has every field empty. Any 2xx acknowledges the whole batch.
    """

    conn_name_attr = "webhook_conn_id"
    default_conn_name = "crm_webhook"
    hook_name = "Segments to a webhook"
    max_batch_size = 1000

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)

    def auth_headers(self) -> dict[str, str]:
        return {}

    def push(self, batch: Batch) -> BatchOutcome:
        secret = self.connection.password
        if not secret:
            raise ValueError(f"connection '{self.conn_id}' has no password (the signing secret)")
        body = json.dumps({"batch_key": batch.key, "label_date": batch.label_date.isoformat(),
                           "records": payload(batch.records)}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: batch.key,
                   SIGNATURE_HEADER: sign(secret, body, batch.key)}
        response, attempts = self.request("POST", self.base_url, data=body, headers=headers,
                                          expect=(200, 201, 202, 204))
        return BatchOutcome(batch.records["record_id"].tolist(), {}, response.status_code, attempts)

    def probe(self) -> None:
        self.get_conn().options(self.base_url, timeout=self.timeout_s)


class OutboxHook(BaseHook):
    """Write the changed labels to the warehouse table ``crm_outbox`` for a reverse-ETL tool to deliver.

    Set-based: one transaction inserts every changed customer's row (a record
    already in the outbox, same ``record_key``, is not written again), moves
    their ``crm_push_state`` and upserts the audit row. There are no batches.
    """

    conn_name_attr = "warehouse_conn_id"
    default_conn_name = "segmentation_warehouse"
    hook_name = "Segments to the warehouse outbox"
    max_batch_size = None

    def __init__(self, warehouse_url: str, target: str = "outbox", *, warehouse: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warehouse_url = warehouse_url
        self.target = target
        self._wh = warehouse  # the caller's open Warehouse, if it has one

    def get_conn(self):
        from include.runtime.warehouse import Warehouse

        if self._wh is None:
            self._wh = Warehouse(self.warehouse_url)
        return self._wh

    def deliver(self, *, run_id: str, as_of_date: Any, label_date: Any, matching: Any = None,
                run_summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the labels of ``label_date`` that differ from the outbox's state; return the counts.

        ``run_summary`` (the push's plan) is recorded in ``crm_push_runs`` in the same transaction.
        """
        return deliver_to_outbox(self.get_conn(), target=self.target, run_id=run_id, as_of_date=as_of_date,
                                 label_date=label_date, matching=matching, run_summary=run_summary)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn().scalar("SELECT COUNT(*) FROM crm_outbox")
        except Exception as exc:  # noqa: BLE001 - reported to the UI
            return False, str(exc)
        return True, "Connection successfully tested"
