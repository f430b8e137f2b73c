"""The CRM only moves forward, re-runs are no-ops, and the reference receiver survives restarts.

Real DuckDB warehouses, ``PushSegmentsOperator.execute()``, and the real
``scripts/webhook_receiver.py`` in a subprocess with its SQLite state.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import requests

from include.crm.contract import (
    CURRENT_OUTBOX_SQL,
    IDEMPOTENCY_HEADER,
    PUSH_FIELDS,
    SIGNATURE_HEADER,
    MalformedSignature,
    load_labels,
    sign,
    verify_signature,
)
from include.runtime.warehouse import Warehouse
from tests.crm_servers import HoldingProxy, ReceiverProcess
from tests.plugins.test_crm import NAMES, operator, set_conn
from tests.published import write_published

D1, D2, D3 = dt.date(2026, 10, 31), dt.date(2026, 11, 7), dt.date(2026, 11, 14)
N = 200
KEYS = [f"C{i:015x}" for i in range(N)]


def segments_by_date() -> dict[dt.date, np.ndarray]:
    """Labels that move between the three dates (D2: 60 customers move, D3: 61 more or back)."""
    base = np.array([1 + i % 3 for i in range(N)])
    second = base.copy()
    second[:60] = 1 + second[:60] % 3
    third = second.copy()
    third[40:101] = 1 + third[40:101] % 3
    return {D1: base, D2: second, D3: third}


def publish(url: str, date: dt.date, seg: np.ndarray) -> None:
    """Published labels, CLV and priorities of ``date`` (what the publish and economics stages write)."""
    write_published(url, date, KEYS, seg, NAMES)


def expected(url: str, date: dt.date) -> dict[str, dict]:
    """Customer key -> pushed fields of ``date``'s labels."""
    with Warehouse(url) as wh:
        labels = load_labels(wh, date)
    return {r["customer_key"]: {f: (int(r[f]) if f == "segment_id" else r[f]) for f in PUSH_FIELDS}
            for r in labels.to_dict(orient="records")}


def duplicates(url: str) -> dict[str, int]:
    """Rows beyond the first per key in each CRM table (all must be 0)."""
    checks = {"crm_outbox": "target, record_key", "crm_push_log": "target, idempotency_key",
              "crm_push_state": "target, customer_key"}
    with Warehouse(url) as wh:
        return {t: int(wh.scalar(f"SELECT COUNT(*) - COUNT(DISTINCT ({k})) FROM {t}")) for t, k in checks.items()}


def counts(url: str) -> dict[str, int]:
    with Warehouse(url) as wh:
        return {t: int(wh.scalar(f"SELECT COUNT(*) FROM {t}")) for t in ("crm_outbox", "crm_push_log",
                                                                          "crm_push_state")}


def push(url: str, date: dt.date, targets=("outbox", "webhook")) -> dict[str, dict]:
    return {t: operator(t, url, date=date, batch_size=50).execute({"run_id": f"{t}-{date}"}) for t in targets}


@pytest.fixture
def url(tmp_path) -> str:
    return f"duckdb:///{tmp_path / 'crm.duckdb'}"


def test_rerunning_old_dates_never_moves_the_target_back(url, tmp_path, monkeypatch, airflow_db):
    seg = segments_by_date()
    with ReceiverProcess(tmp_path / "receiver.sqlite") as receiver:
        set_conn(monkeypatch, "crm_webhook", receiver.url, receiver.secret)
        for date in (D1, D2, D3):  # weekly runs: publish, then push
            publish(url, date, seg[date])
            out = push(url, date)
            assert out["webhook"]["label_date"] == date.isoformat()
        assert out["webhook"]["changed"] == 61
        newest = expected(url, D3)
        assert {k: f for k, (_, f) in receiver.current().items()} == newest
        before, delivered, held = counts(url), len(receiver.deliveries()), receiver.current()

        # Re-runs of older dates (and a re-run of 7 Nov that republished different labels) send nothing:
        # the newest labels are already delivered, and older ones never go out.
        republished = seg[D2].copy()
        republished[150:190] = 1 + republished[150:190] % 3
        publish(url, D2, republished)
        for date in (D2, D1, D3):
            out = push(url, date)
            for summary in out.values():
                assert summary["label_date"] == D3.isoformat() and summary["changed"] == 0
        assert counts(url) == before and len(receiver.deliveries()) == delivered
        assert receiver.current() == held  # no customer went back in time (nor anywhere)

        # A re-run of 14 Nov that changes 93 labels sends exactly those 93 with new keys (not swallowed as
        # duplicates), and changing them back sends them again: every change reaches the receiver.
        changed = seg[D3].copy()
        changed[100:193] = 1 + changed[100:193] % 3
        for labels in (changed, seg[D3]):
            publish(url, D3, labels)
            out = push(url, D1)  # triggered by an old date: still the newest labels
            assert out["webhook"]["changed"] == out["outbox"]["changed"] == 93
            assert {k: f for k, (_, f) in receiver.current().items()} == expected(url, D3)
        assert expected(url, D3) == newest
        assert len(receiver.deliveries()) == delivered + 2 * 2  # two batches of <= 50, twice

    assert duplicates(url) == {"crm_outbox": 0, "crm_push_log": 0, "crm_push_state": 0}
    with Warehouse(url) as wh:
        current = wh.query_df(CURRENT_OUTBOX_SQL, {"target": "outbox"})
        state = wh.query_df("SELECT customer_key, checksum FROM crm_push_state WHERE target = 'webhook'")
        labels = load_labels(wh, D3)
    assert {k: json.loads(p) for k, p in zip(current["customer_key"], current["payload"], strict=True)} == \
        {k: {"customer_key": k, **f} for k, f in newest.items()}
    assert dict(zip(state["customer_key"], state["checksum"], strict=True)) == \
        dict(zip(labels["customer_key"], labels["checksum"], strict=True))


def test_backfill_in_any_order_with_reruns_leaves_the_same_outbox(tmp_path, airflow_db):
    seg = segments_by_date()
    in_order = f"duckdb:///{tmp_path / 'in_order.duckdb'}"
    for date in (D1, D2, D3):
        publish(in_order, date, seg[date])
        push(in_order, date, ("outbox",))
    shuffled = f"duckdb:///{tmp_path / 'shuffled.duckdb'}"
    for date in (D3, D1, D2, D3, D1, D2):  # backfill out of order, with re-runs
        publish(shuffled, date, seg[date])
        push(shuffled, date, ("outbox",))

    def current(url):
        with Warehouse(url) as wh:
            out = wh.query_df(CURRENT_OUTBOX_SQL, {"target": "outbox"})
            state = wh.query_df("SELECT customer_key, checksum, as_of_date FROM crm_push_state ORDER BY 1")
        return out[["customer_key", "as_of_date", "payload", "checksum"]], state

    (out_a, state_a), (out_b, state_b) = current(in_order), current(shuffled)
    assert len(out_a) == N and out_a["as_of_date"].eq(pd.Timestamp(D3)).sum() > 0
    pd.testing.assert_frame_equal(out_a.drop(columns="as_of_date"), out_b.drop(columns="as_of_date"))
    pd.testing.assert_frame_equal(state_a.drop(columns="as_of_date"), state_b.drop(columns="as_of_date"))
    assert out_b["as_of_date"].eq(pd.Timestamp(D3)).all()  # the shuffled backfill only ever sent D3's labels
    for url in (in_order, shuffled):
        assert duplicates(url) == {"crm_outbox": 0, "crm_push_log": 0, "crm_push_state": 0}
    assert counts(shuffled)["crm_outbox"] == N and counts(shuffled)["crm_push_log"] == 1


PUSH_SCRIPT = """
import sys
sys.path[:0] = {paths!r}
from segmentation_providers.operators.push_segments import PushSegmentsOperator
PushSegmentsOperator(task_id="push_webhook", target="webhook", as_of_date="{day}", batch_size=50,
                     warehouse_url="{url}").execute({{"run_id": "killed"}})
"""


def test_killed_push_restarted_receiver_resume_delivers_each_customer_once(url, tmp_path, monkeypatch,
                                                                          airflow_db):
    from tests.conftest import ROOT

    seg = segments_by_date()
    publish(url, D2, seg[D2])
    state = tmp_path / "receiver.sqlite"
    receiver = ReceiverProcess(state).start()
    try:
        with HoldingProxy(receiver.url) as proxy:
            set_conn(monkeypatch, "crm_webhook", proxy.url, receiver.secret)
            proxy.hold_after = 2  # the third batch reaches the receiver, its answer never comes back
            code = PUSH_SCRIPT.format(paths=[str(ROOT), str(ROOT / "plugins")], day=D2.isoformat(), url=url)
            pusher = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                assert proxy.held.wait(120), pusher.stderr.read().decode()[-2000:] if pusher.poll() else ""
            finally:
                pusher.send_signal(signal.SIGKILL)
                pusher.wait(30)
                pusher.stderr.close()
            assert len(receiver.deliveries()) == 3  # applied by the receiver, two acknowledged to the pusher

            # The receiver restarts before the resume: its seen keys are on disk.
            receiver.kill()
            receiver = ReceiverProcess(state).start()
            proxy.upstream, proxy.hold_after = receiver.url, None
            resumed = operator("webhook", url, date=D2, batch_size=50).execute({"run_id": "resumed"})
            assert resumed["changed"] == N - 100 and resumed["batches"] == 2
            delivered = [r["customer_key"] for _, _, records in receiver.deliveries() for r in records]
            assert sorted(delivered) == KEYS  # every customer exactly once
            with Warehouse(url) as wh:
                codes = wh.query_df("SELECT batch, run_id, response_code FROM crm_push_log ORDER BY logged_at")
            # The in-flight batch was re-sent with its key and answered as a duplicate (200, not 202).
            assert codes["response_code"].tolist() == [202, 202, 200, 202]

            # Newer labels published, then an old date re-run: only the changed customers go, with the
            # newest labels, once each; nobody holds anything older than the newest date.
            publish(url, D3, seg[D3])
            again = operator("webhook", url, date=D2, batch_size=50).execute({"run_id": "r"})
            assert again["label_date"] == D3.isoformat() and again["changed"] == 61
            batches = receiver.deliveries()
            newest = [r["customer_key"] for _, d, records in batches if d == D3.isoformat() for r in records]
            assert sorted(newest) == KEYS[40:101]
            held = receiver.current()
            assert {k: f for k, (_, f) in held.items()} == expected(url, D3)
            assert operator("webhook", url, date=D3).execute({"run_id": "r2"})["changed"] == 0
    finally:
        receiver.kill()


def _post(receiver: ReceiverProcess, body: bytes, key: str | None, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[IDEMPOTENCY_HEADER] = key
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return requests.post(receiver.url, data=body, headers=headers, timeout=10)


def test_reference_receiver_rejects_what_it_must_and_dedupes_across_restarts(tmp_path):
    with pytest.raises(RuntimeError, match="no signing secret"):
        ReceiverProcess(tmp_path / "unsigned.sqlite", secret=None).start()
    with pytest.raises(RuntimeError, match="no signing secret"):
        ReceiverProcess(tmp_path / "empty.sqlite", secret="").start()

    state = tmp_path / "receiver.sqlite"
    record = {"customer_key": "C1", "segment_id": 1, "segment_name": "High-value core", "clv_tier": "A",
              "priority": "high", "segment_action": "Call"}
    newer = json.dumps({"batch_key": "k2", "label_date": "2026-11-14", "records": [record]}).encode()
    older = json.dumps({"batch_key": "k1", "label_date": "2026-11-07",
                        "records": [{**record, "segment_id": 2, "segment_name": "Hibernating"}]}).encode()
    with ReceiverProcess(state) as receiver:
        ok = _post(receiver, newer, "k2", sign(receiver.secret, newer, "k2"))
        assert ok.status_code == 202 and ok.json()["applied"] == 1
        # Malformed headers: 400, never a crash (a non-ASCII v1 used to raise TypeError in compare_digest).
        good = sign(receiver.secret, newer, "k3")
        t = good.split(",")[0]
        for header in (t + ",v1=" + "é" * 64, t + ",v1=" + "A" * 64, t, "v1=" + "a" * 64, "garbage",
                       good + ",v2=00", ""):
            response = _post(receiver, newer, "k3", header)
            assert response.status_code == 400, header
        assert _post(receiver, newer, None, good).status_code == 400  # no idempotency key
        assert _post(receiver, b"not json", "k4", sign(receiver.secret, b"not json", "k4")).status_code == 400
        # The key is signed: replaying a captured request under a new key fails; so does an empty-secret MAC.
        assert _post(receiver, newer, "k2-replayed", sign(receiver.secret, newer, "k2")).status_code == 401
        t_now = int(time.time())
        forged = f"t={t_now},v1={hmac.new(b'', f'{t_now}.k5.'.encode() + newer, 'sha256').hexdigest()}"
        assert _post(receiver, newer, "k5", forged).status_code == 401
        # Older labels never replace newer ones.
        stale = _post(receiver, older, "k1", sign(receiver.secret, older, "k1"))
        assert stale.status_code == 202 and stale.json() == {"status": "accepted", "applied": 0, "older_ignored": 1}
    with ReceiverProcess(state) as receiver:  # restarted: the seen keys survived
        again = _post(receiver, newer, "k2", sign(receiver.secret, newer, "k2"))
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert receiver.current() == {"C1": ("2026-11-14", {k: v for k, v in record.items() if k != "customer_key"})}
        assert len(receiver.deliveries()) == 2


def test_signature_rejects_malformed_headers_and_empty_secrets():
    body = b'{"records": []}'
    header = sign("k", body, "key", timestamp=1_700_000_000)
    assert verify_signature("k", body, header, "key", now=1_700_000_000)
    for bad in (None, "", "t=1700000000,v1=" + "é" * 64, header.upper(), header + ",v1=" + "0" * 64,
                "t=x,v1=" + "0" * 64, header[:-1]):
        with pytest.raises(MalformedSignature):
            verify_signature("k", body, bad, "key", now=1_700_000_000)
    with pytest.raises(ValueError, match="secret is empty"):
        sign("", body, "key")
    with pytest.raises(ValueError, match="secret is empty"):
        verify_signature("", body, header, "key", now=1_700_000_000)


def test_a_push_needs_complete_labels_and_upgrades_old_crm_tables(url):
    from include.crm.contract import ensure_crm_tables, newest_label_date

    with Warehouse(url) as wh:
        # A warehouse written by the previous version: the old column layout, one acknowledged customer.
        wh.run_script("CREATE TABLE crm_push_state (target VARCHAR, customer_key VARCHAR, checksum VARCHAR, "
                      "as_of_date DATE, acknowledged_at TIMESTAMP);\n"
                      "INSERT INTO crm_push_state VALUES ('outbox', 'C1', 'x', DATE '2026-11-07', NULL)")
        ensure_crm_tables(wh)
        assert {"record_key", "deliveries", "ack_id"} <= set(wh.table_columns("crm_push_state"))
        assert {"record_key"} <= set(wh.table_columns("crm_outbox"))
        assert wh.scalar("SELECT COUNT(*) FROM crm_push_state") == 1  # kept
        with pytest.raises(ValueError, match="table customer_segments does not exist"):
            newest_label_date(wh, D2)
        wh.ensure_schema()
        with pytest.raises(ValueError, match="customer_segments has no published labels for as_of_date=2026-11-07"):
            newest_label_date(wh, D2)
    publish(url, D2, segments_by_date()[D2])
    with Warehouse(url) as wh:
        wh.run_script("DELETE FROM customer_priority")
        with pytest.raises(ValueError, match="customer_priority has no rows for as_of_date=2026-11-07"):
            newest_label_date(wh, D2)
    publish(url, D2, segments_by_date()[D2])
    publish(url, D3, segments_by_date()[D3])
    with Warehouse(url) as wh:
        assert newest_label_date(wh, D1) == D3 and newest_label_date(wh, D2) == D3
        # Segments of a newer date whose economics have not run yet are not complete: not pushed.
        wh.run_script("DELETE FROM customer_priority WHERE as_of_date = DATE '2026-11-14'")
        assert newest_label_date(wh, D2) == D2
