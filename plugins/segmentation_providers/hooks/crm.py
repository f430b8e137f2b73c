"""CRM hooks: connection, auth, batching, retries and ``test_connection`` per target.

One hook per target, split the way Airflow's providers split them (the
operator only holds arguments and builds the hook in ``execute``):

- :class:`HubSpotHook`: CRM v3 ``batch/upsert`` by a unique id property;
- :class:`SalesforceBulkHook`: Bulk API 2.0 ingest job, ``operation=upsert``;
- :class:`WebhookHook`: signed JSON batches with an idempotency key;
- :class:`OutboxHook`: the ``crm_outbox`` warehouse table (embedded default).

Every hook answers ``push(batch) -> BatchOutcome`` with the keys the target
acknowledged and the ones it rejected (with the reason). Credentials come only
from the Airflow connection and are never logged.
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
    SIGNATURE_HEADER,
    Batch,
    BatchOutcome,
    deliver_to_outbox,
    payload,
    sign,
)

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
    """HubSpot CRM v3: ``POST /crm/v3/objects/{object_type}/batch/upsert`` by a unique id property.

    Connection: host (default ``https://api.hubapi.com``), password = private
    app token (Bearer). Extras: ``object_type`` (default ``contacts``),
    ``id_property`` (a unique-value property, default ``customer_key``),
    ``max_requests_per_10s`` (default 100, the Free/Starter private-app limit).
    At most 100 inputs per request; a 207 answer lists per-input errors.
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

    def push(self, batch: Batch) -> BatchOutcome:
        extra = self.connection.extra_dejson
        object_type, id_property = extra.get("object_type", "contacts"), extra.get("id_property", "customer_key")
        records = payload(batch.records)
        if len(records) > self.max_batch_size:
            raise ValueError(f"HubSpot batch upsert takes at most {self.max_batch_size} inputs, got {len(records)}")
        inputs = [{"id": r["customer_key"], "idProperty": id_property, "objectWriteTraceId": r["customer_key"],
                   "properties": {k: _text(v) for k, v in r.items() if k != "customer_key"}} for r in records]
        response, attempts = self.request("POST", f"/crm/v3/objects/{object_type}/batch/upsert",
                                          json={"inputs": inputs}, expect=(200, 201, 207))
        body = response.json()
        failed: dict[str, str] = {}
        for error in body.get("errors", []):
            for trace in (error.get("context") or {}).get("objectWriteTraceId", []):
                failed[trace] = f"{error.get('category', 'ERROR')}: {error.get('message', '')}"[:300]
        acked = [r["customer_key"] for r in records if r["customer_key"] not in failed]
        return BatchOutcome(acked, failed, response.status_code, attempts,
                            f"{len(failed)} inputs rejected" if failed else "")

    def probe(self) -> None:
        object_type = self.connection.extra_dejson.get("object_type", "contacts")
        self.request("GET", f"/crm/v3/objects/{object_type}?limit=1")


def _text(value: Any) -> str:
    """A property value as text; booleans as ``true``/``false`` (HubSpot and Salesforce boolean fields)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class SalesforceBulkHook(_HttpCrmHook):
    """Salesforce Bulk API 2.0 ingest: one upsert job per batch (CSV, UploadComplete, poll, results).

    Connection: host = instance URL, password = OAuth access token (Bearer).
    Extras: ``object`` (default ``Contact``), ``external_id_field`` (default
    ``Customer_Key__c``), ``api_version`` (default ``v62.0``),
    ``field_map`` (our field -> Salesforce field, default ``<Field>__c``).
    """

    conn_name_attr = "salesforce_conn_id"
    default_conn_name = "crm_salesforce"
    hook_name = "Segments to Salesforce (Bulk API 2.0)"
    max_batch_size = 10_000  # Salesforce splits jobs into 10,000-record internal batches

    def __init__(self, conn_id: str = default_conn_name, *, poll_interval_s: float = 2.0,
                 max_polls: int = 300, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self.poll_interval_s = poll_interval_s
        self.max_polls = max_polls

    def _settings(self) -> tuple[str, str, str, dict[str, str]]:
        extra = self.connection.extra_dejson
        field_map = {"customer_key": extra.get("external_id_field", "Customer_Key__c"),
                     "segment_id": "Segment_Id__c", "segment_name": "Segment_Name__c",
                     "clv_tier": "CLV_Tier__c", "priority": "Segment_Priority__c",
                     "segment_action": "Segment_Action__c", "holdout": "Segment_Holdout__c",
                     **extra.get("field_map", {})}
        return (extra.get("object", "Contact"), field_map["customer_key"], extra.get("api_version", "v62.0"),
                field_map)

    def push(self, batch: Batch) -> BatchOutcome:
        obj, external_id, version, field_map = self._settings()
        base = f"/services/data/{version}/jobs/ingest"
        records = payload(batch.records)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[field_map[k] for k in records[0]], lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({field_map[k]: _text(v) for k, v in r.items()})
        job, attempts = self.request("POST", base, expect=(200, 201), json={
            "object": obj, "operation": "upsert", "externalIdFieldName": external_id,
            "contentType": "CSV", "lineEnding": "LF"})
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
        failed = {row[external_id]: row.get("sf__Error", "")[:300]
                  for row in csv.DictReader(io.StringIO(failed_csv.text))}
        unprocessed, _ = self.request("GET", f"{base}/{job_id}/unprocessedrecords/")
        for row in csv.DictReader(io.StringIO(unprocessed.text)):
            failed[row[external_id]] = "unprocessed"
        acked = [r["customer_key"] for r in records if r["customer_key"] not in failed]
        return BatchOutcome(acked, failed, 200, attempts, f"job {job_id}")

    def probe(self) -> None:
        self.request("GET", f"/services/data/{self._settings()[2]}/jobs/ingest")


class WebhookHook(_HttpCrmHook):
    """Signed JSON batches to one URL.

    Connection: host = full URL, password = signing secret. Each request
    carries ``Idempotency-Key`` (the batch's content key: the same on a resend)
    and ``X-Segments-Signature: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<key>." + body)``
    (check it with :func:`include.crm.contract.verify_signature`). The body is
    ``{"batch_key", "label_date", "records"}``. Any 2xx acknowledges the whole
    batch.
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
        return BatchOutcome(batch.records["customer_key"].tolist(), {}, response.status_code, attempts)

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

    def deliver(self, *, run_id: str, as_of_date: Any, label_date: Any) -> dict[str, Any]:
        """Write the labels of ``label_date`` that differ from the outbox's state; return the counts."""
        return deliver_to_outbox(self.get_conn(), target=self.target, run_id=run_id, as_of_date=as_of_date,
                                 label_date=label_date)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn().scalar("SELECT COUNT(*) FROM crm_outbox")
        except Exception as exc:  # noqa: BLE001 - reported to the UI
            return False, str(exc)
        return True, "Connection successfully tested"
