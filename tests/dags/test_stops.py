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
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
AS_OF = dt.date(2026, 11, 7)
#: Enough refits that segmentation is still running when the signal comes.
CONF = {"k_min": 3, "k_max": 12, "n_init": 20, "n_bootstrap": 200, "min_jaccard": 0.0, "crm_targets": ["outbox"]}


def test_sigterm_stops_the_run_within_seconds_leaving_no_half_written_date(warehouse_url, airflow_db, tmp_path):
    import mlflow

    from include.runtime.warehouse import Warehouse

    log_path = tmp_path / "run_dates.log"
    env = {**os.environ, "WAREHOUSE_URL": warehouse_url, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "scripts/run_dates.py", "customer_segmentation",
                                 (AS_OF + dt.timedelta(days=1)).isoformat(), "-c", json.dumps(CONF)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 1200
        while "k=3 cost=" not in log_path.read_text(errors="replace"):  # segment_customers is screening k
            if proc.poll() is not None:
                pytest.fail(f"run_dates.py ended before segment_customers started; its log: {log_path}")
            if time.monotonic() > deadline:
                pytest.fail(f"segment_customers did not start within 1200 s; log: {log_path}")
            time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
    output = log_path.read_text(errors="replace")
    assert proc.returncode == 128 + signal.SIGTERM, (log_path, output[-3000:])
    # Seconds (about 20 at load 18 here), not the minutes the rest of the stage and the DAG would take.
    assert stopped_after < 180, (stopped_after, log_path)
    assert "StageTerminated: stopped by SIGTERM" in output, log_path  # raised in the running stage
    assert "   stopped by SIGTERM" in output, log_path  # run_dates.py's progress line: no later date started

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
