"""SIGTERM stops a running DAG run within seconds: no half-written date, the MLflow run closed KILLED.

``scripts/run_dates.py`` (what the demo runs: ``dags test`` for each date, one process)
is started on a small warehouse with many bootstrap refits, so ``segment_customers``
runs for a while; once its task has started, the process gets SIGTERM. Before the stop
(``include/runtime/stops.py``) Airflow's handler only called ``on_kill`` and the run went
on to the end, or until SIGKILL, with its MLflow run left RUNNING.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
AS_OF = dt.date(2026, 11, 7)
#: Enough refits that segmentation is still running when the signal comes.
CONF = {"k_min": 3, "k_max": 12, "n_init": 20, "n_bootstrap": 200, "min_jaccard": 0.0, "crm_targets": ["outbox"]}


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_sigterm_stops_the_run_within_seconds_leaving_no_half_written_date(warehouse_url, airflow_db):
    import mlflow

    from include.runtime.warehouse import Warehouse

    env = {**os.environ, "WAREHOUSE_URL": warehouse_url}
    proc = subprocess.Popen([sys.executable, "scripts/run_dates.py", "customer_segmentation",
                             (AS_OF + dt.timedelta(days=1)).isoformat(), "-c", json.dumps(CONF)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail("run_dates.py ended before segment_customers started:\n" + "".join(seen[-60:]))
            seen.append(line)
            if "k=3 cost=" in line:  # segment_customers is screening k
                break
        else:
            pytest.fail("segment_customers did not start within 900 s:\n" + "".join(seen[-60:]))
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
    while (line := lines.get(timeout=30)) is not None:
        seen.append(line)
    output = "".join(seen)
    assert proc.returncode == 128 + signal.SIGTERM, output[-5000:]
    # Seconds, not the minutes the rest of the stage and the DAG would take (generous for a loaded machine).
    assert stopped_after < 120, (stopped_after, output[-3000:])
    assert "StageTerminated" in output or "stopped by SIGTERM" in output

    with Warehouse(warehouse_url) as wh:
        d = {"d": AS_OF}
        assert wh.scalar("SELECT COUNT(*) FROM customer_features WHERE as_of_date = :d", d) > 0  # committed before
        for table in ("segment_assignments", "segment_profiles", "segmentation_runs", "customer_segments"):
            assert wh.scalar(f"SELECT COUNT(*) FROM {table} WHERE as_of_date = :d", d) == 0, table

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("customer_segmentation").experiment_id],
        filter_string=f"tags.as_of_date = '{AS_OF.isoformat()}' AND tags.`airflow.dag_id` = 'customer_segmentation'",
        order_by=["attributes.start_time DESC"], max_results=1)
    (parent,) = runs
    assert parent.info.status == "KILLED"
    assert parent.data.tags["stopped"].startswith("segment_customers: stopped by SIGTERM")
