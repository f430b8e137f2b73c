"""A data or model-input error fails its task once, in a real DAG run: no retry, the table named.

The DAG retries a task once after five minutes (``default_args``): right for a lost
connection or a locked file, wrong for data, where the retry fails the same way minutes
later (one default run took 17 min to fail so). Each shop here is built to trip one kind
of finding; ``dag.test`` runs the DAG, and the failing task must end ``failed`` on try 1
(``up_for_retry`` would show a retry was scheduled); the failing stage, called again on the
same tables, raises the finding naming the table.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
#: Small settings: the findings come before any model work would matter.
CONF = {"identity_method": "exact", "k_min": 3, "k_max": 4, "n_bootstrap": 2, "crm_targets": ["outbox"]}
AS_OF = dt.date(2026, 11, 14)


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _one_order_shop(url: str, customers: int = 120) -> None:
    """Every customer bought once, the same amount on the same day through the same channel, joined the same day.

    Every feature is the same for everyone (nothing to segment) and nobody bought twice (nothing for a CLV model).
    """
    from include.demo.transactions_only import generate_transactions_only
    from include.runtime.warehouse import Warehouse

    tables = generate_transactions_only(customers, end_date=AS_OF)
    orders = tables["raw_orders"].drop_duplicates("source_id").assign(
        amount=50.0, order_ts="2026-06-01 12:00:00", channel="web")
    identity = tables["raw_identity_records"].assign(created_at="2026-06-01 12:00:00")
    with Warehouse(url) as wh:
        wh.replace_table("raw_identity_records", identity)
        wh.replace_table("raw_orders", orders)


def _task_outcomes(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def test_constant_features_and_no_repeat_buyers_fail_once_naming_the_table(dagbag, tmp_path, monkeypatch):
    from include.clv.models import ClvInputError
    from include.runtime.errors import ModelInputError
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.stages import stage

    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    _one_order_shop(url)
    monkeypatch.setenv("WAREHOUSE_URL", url)
    run = dagbag.dags["customer_segmentation"].test(
        logical_date=dt.datetime.combine(AS_OF + dt.timedelta(days=1), dt.time(), dt.UTC), run_conf=CONF)
    outcomes = _task_outcomes(run)
    assert run.state == "failed"
    assert outcomes["build_features"] == ("success", 1)
    # Segmentation: no feature varies. CLV: nobody bought twice. Both failed once, neither is up for retry.
    assert outcomes["segment_customers"] == ("failed", 1), outcomes
    assert outcomes["fit_clv"] == ("failed", 1), outcomes
    assert outcomes["close_mlflow_run"][0] == "success"
    # What those tasks raised, on the same tables (the DAG run's log goes to Airflow's task logging).
    again = RunInfo("customer_segmentation", run.run_id, AS_OF, PipelineSettings.from_params(CONF), url)
    with pytest.raises(ModelInputError, match="customer_features has no numeric feature"):
        stage("segment_customers")(again)
    with pytest.raises(ClvInputError, match="repeat purchases"):
        stage("fit_clv")(again)


def test_a_date_before_every_order_fails_once_on_its_empty_features(dagbag, tmp_path, monkeypatch):
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    _one_order_shop(url)
    monkeypatch.setenv("WAREHOUSE_URL", url)
    run = dagbag.dags["customer_segmentation"].test(
        logical_date=dt.datetime(2026, 5, 3, tzinfo=dt.UTC), run_conf=CONF)  # as of 2026-05-02: no order yet
    outcomes = _task_outcomes(run)
    assert run.state == "failed"
    failed = {task: o for task, o in outcomes.items() if o[0] == "failed"}
    assert failed, outcomes
    # Whichever task finds the date empty, it says so once: no task is up for retry.
    assert all(o == ("failed", 1) for o in failed.values()), outcomes
    assert not [task for task, o in outcomes.items() if o[0] == "up_for_retry"], outcomes
