"""The DAG under the real scheduler, the way operators run it.

``airflow dags test`` runs one task at a time in one process; the scheduler's
LocalExecutor runs independent tasks side by side in separate processes (here two:
``fit_clv`` beside ``segment_customers``, the CRM pushes beside the report). This
test starts the stack with ``scripts/ui.sh`` (api-server, scheduler, dag-processor on
free loopback ports, the metadata in the data folder's PostgreSQL) over a small generated
warehouse, triggers a run through the REST API, then backfills two weeks with ``airflow
backfill create``, and asserts that every task succeeded on its first try: a retry would
hide a lock conflict or a task that touches the metadata database, both of which ``dags
test`` cannot show. Every wait is a poll of the runs' state with a deadline of many
minutes (the machine may be at load 15), never a fixed read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time

import pytest

from tests.airflow_stack import DAG_ID, SMALL_DATA_CONF, STACK_PERSONS, AirflowStack, StackError

pytestmark = pytest.mark.slow
#: The session's stack (``segmentation_stack``) is shared with tests/dags/test_screenshots.py.
CONF = SMALL_DATA_CONF
TRIGGERED_AS_OF = "2026-11-07"
#: Backfill of the weekly (Sunday) schedule: two runs, as-of dates the Saturdays before.
BACKFILL_FROM, BACKFILL_TO = "2026-11-01", "2026-11-08"
BACKFILL_AS_OF = {dt.date(2026, 10, 31), dt.date(2026, 11, 7)}
RUN_TIMEOUT = 1800
#: Every table a run writes, with the key that must be unique within one as-of date.
UNIQUE_KEYS = {
    "customer_features": "customer_key", "customers": "customer_key", "segment_assignments": "customer_key",
    "customer_segments": "customer_key", "customer_clv": "customer_key", "customer_economics": "customer_key",
    "identity_map": "source_system || ':' || source_id",
}


@pytest.fixture(scope="module")
def stack(segmentation_stack):
    return segmentation_stack


def _assert_first_try_success(stack: AirflowStack, run: dict) -> None:
    run_id = run["dag_run_id"]
    states = stack.task_states(DAG_ID, run_id)
    tasks = {t["task_id"] for t in stack.api("GET", f"dags/{DAG_ID}/tasks")["tasks"]}
    assert set(states) == tasks, states
    failed = {task: st for task, st in states.items() if st[0] not in ("success", "skipped") or st[1] != 1}
    if failed or run["state"] != "success":
        logs = "\n".join(f"--- {task} try {st[1]}\n{stack.task_log(DAG_ID, run_id, task, 1)[-3000:]}"
                         for task, st in failed.items())
        pytest.fail(f"run {run_id} ({run['state']}): not all tasks succeeded on their first try: {failed}\n{logs}")
    # Only the CRM targets outside crm_targets skip themselves.
    assert {task for task, st in states.items() if st[0] == "skipped"} == {
        "push_webhook", "push_hubspot", "push_salesforce"}


def _durations(stack: AirflowStack, run: dict) -> str:
    tis = sorted(stack.task_instances(DAG_ID, run["dag_run_id"]), key=lambda ti: -(ti["duration"] or 0))
    return ", ".join(f"{ti['task_id']} {ti['duration'] or 0:.0f}" for ti in tis)


def _wall_seconds(run: dict) -> float:
    start, end = (dt.datetime.fromisoformat(run[k]) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


def test_every_server_listens_on_loopback_only(stack):
    addresses = stack.listening_addresses()
    assert {("127.0.0.1", stack.port), ("127.0.0.1", stack.log_port)} <= addresses
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in addresses), addresses


def test_triggered_run_succeeds_on_first_try_of_every_task(stack):
    run_id = stack.trigger(DAG_ID, {**CONF, "as_of_date": TRIGGERED_AS_OF})
    run = stack.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
    _assert_first_try_success(stack, run)
    print(f"triggered run ({STACK_PERSONS} persons) under the scheduler: {_wall_seconds(run):.0f} s wall; "
          f"task seconds: {_durations(stack, run)}")


def test_two_week_backfill_succeeds_on_first_try_without_duplicates(stack):
    from include.runtime.warehouse import Warehouse

    started = time.monotonic()
    # Once: on PostgreSQL the command never meets SQLite's "database is locked" beside a busy scheduler.
    out = stack.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL_FROM,
                        "--to-date", BACKFILL_TO, "--max-active-runs", "1", "--dag-run-conf", json.dumps(CONF))
    assert out.returncode == 0, f"airflow backfill create failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    deadline = started + 2 * RUN_TIMEOUT
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = stack.dag_runs(DAG_ID, run_type="backfill")
        if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    else:
        raise StackError(f"backfill not finished: {[(r['dag_run_id'], r['state']) for r in runs]}\n"
                         f"{stack.logs_tail()}")
    for run in runs:
        _assert_first_try_success(stack, run)

    with Warehouse(f"duckdb:///{stack.data_dir / 'warehouse.duckdb'}") as wh:
        as_of = set(wh.query_df("SELECT DISTINCT CAST(as_of_date AS VARCHAR) AS d FROM customer_segments")["d"])
        # The backfill re-ran the triggered run's date: its rows were replaced, not added.
        assert as_of == {d.isoformat() for d in BACKFILL_AS_OF}
        for table, key in UNIQUE_KEYS.items():
            counts = wh.query_df(f"SELECT as_of_date, COUNT(*) AS n, COUNT(DISTINCT {key}) AS keys "
                                 f"FROM {table} GROUP BY as_of_date")
            assert len(counts) == len(BACKFILL_AS_OF), (table, counts)
            assert (counts["n"] == counts["keys"]).all() and (counts["n"] > 0).all(), (table, counts)
        # One delivery state per target and customer, however often a date was run.
        state_duplicates = wh.scalar("SELECT COUNT(*) - COUNT(DISTINCT target || customer_key) FROM crm_push_state")
    assert state_duplicates == 0
    print("backfill runs under the scheduler: "
          + ", ".join(f"{r['logical_date'][:10]} {_wall_seconds(r):.0f} s" for r in runs))
