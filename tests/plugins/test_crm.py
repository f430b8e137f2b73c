"""CRM pushes against loopback servers that enforce each vendor's contract.

Driven through ``PushSegmentsOperator.execute()`` with a real DuckDB warehouse;
the DAG-level push runs in ``test_dag.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from include.crm.contract import PUSH_FIELDS, changed_since_last_ack, load_labels, sign, verify_signature
from include.runtime.warehouse import Warehouse
from tests.crm_servers import HubSpotServer, SalesforceServer, WebhookReceiver

DAY = dt.date(2026, 11, 7)
NAMES = {1: "High-value core", 2: "Loyal potential", 3: "Hibernating"}


def publish(url: str, date: dt.date, n: int = 250, moved: int = 0) -> list[str]:
    """Published labels, CLV and priorities for ``n`` customers; the first ``moved`` change segment."""
    keys = [f"C{i:015x}" for i in range(n)]
    seg = np.array([1 + i % 3 for i in range(n)])
    seg[:moved] = 1 + seg[:moved] % 3
    with Warehouse(url) as wh:
        wh.ensure_schema()
        wh.replace_partition("customer_segments", pd.DataFrame({
            "as_of_date": date, "customer_key": keys, "segment_id": seg,
            "segment_name": [NAMES[s] for s in seg], "model_run_id": "m"}), {"as_of_date": date})
        wh.replace_partition("customer_clv", pd.DataFrame({
            "as_of_date": date, "customer_key": keys, "p_alive": 0.8, "clv_365d": np.arange(n, dtype=float)}),
            {"as_of_date": date})
        wh.replace_partition("customer_priority", pd.DataFrame({
            "as_of_date": date, "customer_key": keys, "segment_id": seg, "segment_name": [NAMES[s] for s in seg],
            "priority": "medium", "priority_rank": 3, "action": "Automated journey"}), {"as_of_date": date})
    return keys


@pytest.fixture
def url(tmp_path) -> str:
    return f"duckdb:///{tmp_path / 'crm.duckdb'}"


def operator(target: str, url: str, date: dt.date = DAY, **kwargs):
    from segmentation_providers.operators.push_segments import PushSegmentsOperator

    kwargs.setdefault("hook_kwargs", {"backoff_s": 0.05, "max_backoff_s": 2})
    return PushSegmentsOperator(task_id=f"push_{target}", target=target, as_of_date=date.isoformat(),
                                warehouse_url=url, **kwargs)


def push_log(url: str, target: str) -> pd.DataFrame:
    with Warehouse(url) as wh:
        return wh.query_df("SELECT * FROM crm_push_log WHERE target = :t ORDER BY logged_at, batch", {"t": target})


def set_conn(monkeypatch, name: str, host: str, password: str, extra: dict | None = None) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(
        {"conn_type": "http", "host": host, "password": password, "extra": extra or {}}))


def test_outbox_sends_only_what_changed(url, airflow_db):
    keys = publish(url, DAY)
    first = operator("outbox", url, batch_size=100).execute({"run_id": "r1"})
    assert first["changed"] == 250 and first["batches"] == 1 and first["acknowledged"] == 250
    again = operator("outbox", url).execute({"run_id": "r2"})
    assert again["changed"] == 0 and again["batches"] == 0
    week = DAY + dt.timedelta(days=7)
    publish(url, week, moved=10)
    nxt = operator("outbox", url, date=week).execute({"run_id": "r3"})
    assert nxt["changed"] == 10
    with Warehouse(url) as wh:
        out = wh.query_df("SELECT * FROM crm_outbox")
    assert len(out) == 260 and set(out.loc[out["as_of_date"] == pd.Timestamp(week), "customer_key"]) == set(keys[:10])
    sent = json.loads(out["payload"].iloc[0])
    assert set(sent) == {"customer_key", *PUSH_FIELDS}  # nothing else leaves the warehouse
    log = push_log(url, "outbox")
    assert log["status"].eq("ok").all() and log["customers"].sum() == 260


def test_dry_run_reports_and_sends_nothing(url, airflow_db):
    publish(url, DAY)
    out = operator("outbox", url, dry_run="True").execute({"run_id": "r1"})
    assert out["dry_run"] and out["changed"] == 250 and sum(out["would_send_by_segment"].values()) == 250
    assert push_log(url, "outbox").empty
    with Warehouse(url) as wh:
        assert wh.scalar("SELECT COUNT(*) FROM crm_outbox") == 0


def contacts_for(url: str, keys: list[str], date: dt.date = DAY, system: str = "hubspot",
                 ids=lambda i: str(1001 + i)) -> dict[str, str]:
    """One CRM record per customer, loaded as identity records of ``system``; returns record id -> customer."""
    from tests.crm_servers import write_identity_map

    owners = {ids(i): k for i, k in enumerate(keys)}
    write_identity_map(url, date, [(system, rid, key) for rid, key in owners.items()])
    return owners


def test_hubspot_batches_retries_and_partial_failures(url, monkeypatch, airflow_db):
    keys = publish(url, DAY)
    owners = contacts_for(url, keys)
    by_key = {k: rid for rid, k in owners.items()}
    rejected = {by_key[keys[5]], by_key[keys[140]]}
    portal = {rid: {"email": f"person{rid}@example.com"} for rid in owners}
    with HubSpotServer(contacts=portal, reject=rejected) as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token)
        hub.fail_request(2, 429, {"Retry-After": "1"})
        hub.fail_request(4, 500)
        out = operator("hubspot", url, batch_size=500,
                       hook_kwargs={"backoff_s": 0.05, "max_requests_per_window": 2, "window_s": 1.0}).execute({})
        # At most 100 inputs per request (the server answers 400 above that), 2 requests per second here.
        assert out["batches"] == 3 and out["acknowledged"] == 248 and out["failed"] == 2
        assert out["created"] == 0 and hub.created == [] and len(hub.contacts) == 250  # nothing created
        assert hub.max_requests_in_window(1.0) <= 2
        assert set(hub.labelled()) == set(owners) - rejected
        first = hub.contacts[by_key[keys[0]]]
        assert set(first) == {"email", *PUSH_FIELDS}  # the business's own fields are untouched
        log = push_log(url, "hubspot")
        assert log["attempts"].tolist() == [1, 2, 2]  # batch 2 met the 429, batch 3 the 500: both retried
        assert log["status"].tolist() == ["partial", "partial", "ok"] and log["response_code"].tolist()[0] == 207
        # Next run: the two rejected contacts are re-sent, nothing else.
        hub.reject.clear()
        retry = operator("hubspot", url).execute({})
        assert retry["changed"] == 2 and set(hub.labelled()) == set(owners)
        assert sum(hub.inputs_received.values()) == 250 + 2
    # Auth is enforced: a wrong token fails the task with the status code, and the batch is audited.
    with HubSpotServer(contacts=portal) as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, "wrong")
        from segmentation_providers.hooks.crm import CrmHttpError, HubSpotHook

        with pytest.raises(CrmHttpError, match="401"):
            _push_fresh(url, "hubspot")
        assert HubSpotHook().test_connection()[0] is False


def _push_fresh(url: str, target: str):
    with Warehouse(url) as wh:
        wh.run_script("DELETE FROM crm_push_state")
    return operator(target, url).execute({})


def sf_id(i: int) -> str:
    """An 18-character Salesforce Contact Id."""
    return f"003{i:012d}AAA"


def test_salesforce_bulk_update_job_by_id(url, monkeypatch, airflow_db):
    keys = publish(url, DAY, n=30)
    owners = contacts_for(url, keys, system="salesforce", ids=sf_id)
    by_key = {k: rid for rid, k in owners.items()}
    org = {rid: {"LastName": f"Person {rid[-6:]}"} for rid in owners}
    with SalesforceServer(records=org, reject={by_key[keys[3]]}) as sf:
        set_conn(monkeypatch, "crm_salesforce", sf.url, sf.token, {"api_version": "v62.0"})
        from segmentation_providers.hooks.crm import SalesforceBulkHook

        assert SalesforceBulkHook(poll_interval_s=0.01).test_connection() == (True, "Connection successfully tested")
        out = operator("salesforce", url, hook_kwargs={"poll_interval_s": 0.01}).execute({})
        assert out["acknowledged"] == 29 and out["failed"] == 1 and out["created"] == 0
        assert sf.created == [] and len(sf.records) == 30
        assert set(sf.labelled()) == set(owners) - {by_key[keys[3]]}
        row = sf.records[by_key[keys[0]]]
        assert set(row) == {"LastName", "Segment_Id__c", "Segment_Name__c", "CLV_Tier__c",
                            "Segment_Priority__c", "Segment_Action__c", "Segment_Holdout__c"}
        log = push_log(url, "salesforce")
        assert log["status"].tolist() == ["partial"] and log["failed"].tolist() == [1]
        assert {j["operation"] for j in sf.jobs.values()} == {"update"}


def test_webhook_signature_is_verifiable():
    body = b'{"records": []}'
    header = sign("k", body, "key1", timestamp=1_700_000_000)
    assert verify_signature("k", body, header, "key1", now=1_700_000_010)
    assert not verify_signature("k", body + b" ", header, "key1", now=1_700_000_010)  # tampered
    assert not verify_signature("other", body, header, "key1", now=1_700_000_010)  # wrong secret
    assert not verify_signature("k", body, header, "key1", now=1_700_009_999)  # replayed later
    assert not verify_signature("k", body, header, "key2", now=1_700_000_010)  # replayed under a new key


PUSH_SCRIPT = """
import sys
sys.path[:0] = {paths!r}
from segmentation_providers.operators.push_segments import PushSegmentsOperator
PushSegmentsOperator(task_id="push_webhook", target="webhook", as_of_date="{day}", batch_size=50,
                     warehouse_url="{url}").execute({{"run_id": "killed"}})
"""


def test_webhook_push_killed_midway_resumes_exactly_once(url, monkeypatch, airflow_db):
    from tests.conftest import ROOT

    keys = publish(url, DAY)
    with WebhookReceiver() as hook_server:
        set_conn(monkeypatch, "crm_webhook", hook_server.url, hook_server.secret)
        hook_server.hold_after = 2  # the third batch is applied, its answer never comes
        code = PUSH_SCRIPT.format(paths=[str(ROOT), str(ROOT / "plugins")], day=DAY.isoformat(), url=url)
        proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert hook_server.held.wait(120), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        killed = push_log(url, "webhook")
        assert killed["batch"].tolist() == [1, 2]  # two acknowledged batches before the kill
        hook_server.hold_after = None
        resumed = operator("webhook", url, batch_size=50).execute({"run_id": "resumed"})
        assert resumed["changed"] == 150 and resumed["batches"] == 3
        # Every customer is in the target exactly once; the in-flight batch was re-sent with
        # the same idempotency key and dropped by the receiver.
        assert hook_server.customers() == {k: 1 for k in keys}
        assert hook_server.duplicates == 1 and hook_server.bad_signatures == 0
        assert operator("webhook", url).execute({"run_id": "again"})["changed"] == 0
    with Warehouse(url) as wh:
        assert len(load_labels(wh, DAY)) == 250
        assert changed_since_last_ack(wh, "webhook", DAY).empty


def test_retries_honour_retry_after(monkeypatch, airflow_db):
    from segmentation_providers.hooks.crm import HubSpotHook

    with HubSpotServer() as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token)
        hub.fail_request(1, 429, {"Retry-After": "1"})
        start = time.monotonic()
        response, attempts = HubSpotHook(backoff_s=0.01).request("GET", "/crm/v3/objects/contacts?limit=1")
        assert attempts == 2 and response.status_code == 200
        assert time.monotonic() - start >= 1.0  # waited what the server asked, not the 0.01 s backoff
        for n in range(3, 6):  # the next three requests
            hub.fail_request(n, 503)
        from segmentation_providers.hooks.crm import CrmHttpError

        with pytest.raises(CrmHttpError, match="503") as err:
            HubSpotHook(max_retries=2, backoff_s=0.01).request("GET", "/crm/v3/objects/contacts?limit=1")
        assert err.value.attempts == 3


def test_operator_targets_match_the_core():
    from include.crm.contract import TARGETS as CORE
    from segmentation_providers.operators.push_segments import TARGETS

    assert TARGETS == CORE
