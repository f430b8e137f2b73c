"""DAG integrity and an end-to-end run through Airflow on a small generated dataset."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.crm_servers import WebhookReceiver

DAG_FILE = ROOT / "dags" / "customer_segmentation.py"
EDGES = [
    ("apply_erasures", "extract_validate"),  # erasures first: an erased person is never extracted again
    ("extract_validate", "resolve_identity"), ("resolve_identity", "build_features"),
    ("build_features", "segment_customers"), ("build_features", "fit_clv"),
    ("segment_customers", "backtest_claims"), ("segment_customers", "label_segments"),
    ("fit_clv", "label_segments"), ("backtest_claims", "label_segments"),
    # after the labels, each task waits for the tables it reads only
    ("label_segments", "crosscheck_clv"), ("label_segments", "publish_segments"),
    ("publish_segments", "track_migration"), ("track_migration", "check_migration"),
    ("publish_segments", "build_economics"),
    ("build_economics", "compare_schemes"), ("build_economics", "run_experiment"),
    # the report shows every table of the date; the holdout is recorded before it and before any push
    *[(t, "render_report") for t in ("crosscheck_clv", "track_migration", "compare_schemes", "run_experiment")],
    *[("render_report", f"push_{t}") for t in ("outbox", "webhook", "hubspot", "salesforce")],
    # the teardown closing the MLflow run comes after every other task
    ("check_migration", "close_mlflow_run"),
    *[(f"push_{t}", "close_mlflow_run") for t in ("outbox", "webhook", "hubspot", "salesforce")],
]


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "customer_segmentation" in dagbag.dags


def test_dag_wires_the_stages_in_order(dagbag):
    dag = dagbag.dags["customer_segmentation"]
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == set(EDGES)
    assert dag.doc_md and "as-of date" in dag.doc_md.lower()
    assert dag.max_active_runs == 1


def test_any_as_of_date_can_run_and_outlets_are_assets(dagbag):
    dag = dagbag.dags["customer_segmentation"]
    assert dag.start_date <= dt.datetime(1990, 1, 1, tzinfo=dt.UTC) and not dag.catchup  # CDNOW is 1997-98
    outlets = {t.task_id: [a.name for a in t.outlets] for t in dag.tasks if t.outlets}
    assert outlets == {"publish_segments": ["customer_segments"], "fit_clv": ["customer_clv"],
                       "build_economics": ["segment_economics"]}
    assert dag.get_task("close_mlflow_run").is_teardown


def test_a_misspelt_stage_name_fails_the_dag_import(tmp_path, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    broken = tmp_path / "customer_segmentation.py"
    broken.write_text(DAG_FILE.read_text().replace('_stage("resolve_identity")', '_stage("resolve_identiy")'))
    bag = DagBag(dag_folder=str(tmp_path))
    assert "customer_segmentation" not in bag.dags
    (error,) = bag.import_errors.values()
    assert "unknown stage 'resolve_identiy'" in error and "resolve_identity" in error


def test_params_are_typed(dagbag):
    params = dagbag.dags["customer_segmentation"].params
    assert params.get_param("as_of_date").schema["format"] == "date"
    assert params.get_param("k").schema["type"] == ["null", "integer"]
    assert params.get_param("max_bad_share").schema["maximum"] == 1


def test_dag_file_has_no_heavy_top_level_imports():
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('pandas', 'sklearn', 'mlflow', 'duckdb', 'numpy', 'include.tasks', 'scipy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True,
                         env=os.environ.copy(), timeout=600, check=True)
    loaded = set(filter(None, out.stdout.strip().splitlines()[-1].split(","))) if out.stdout.strip() else set()
    assert not loaded & {"pandas", "sklearn", "mlflow", "duckdb", "include.tasks", "scipy"}, loaded


@pytest.mark.slow
def test_dag_runs_end_to_end_and_reruns_idempotently(dagbag, warehouse_url, monkeypatch):
    import mlflow

    from include.runtime.warehouse import Warehouse

    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    dag = dagbag.dags["customer_segmentation"]
    logical = dt.datetime(2026, 11, 8, tzinfo=dt.UTC)  # a Sunday: as-of date 2026-11-07
    as_of = dt.date(2026, 11, 7)
    conf = {"k_min": 3, "k_max": 5, "silhouette_sample": 500, "n_bootstrap": 4, "min_jaccard": 0.0,
            "crm_targets": ["outbox", "webhook"]}
    receiver = WebhookReceiver().__enter__()
    monkeypatch.setenv("AIRFLOW_CONN_CRM_WEBHOOK", json.dumps(
        {"conn_type": "http", "host": receiver.url, "password": receiver.secret}))
    run = dag.test(logical_date=logical, run_conf=conf)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["push_outbox"] == states["push_webhook"] == "success"
    assert states["push_hubspot"] == states["push_salesforce"] == "skipped"  # not in crm_targets
    pushed = receiver.customers()
    with Warehouse(warehouse_url) as wh:
        first = wh.query_df("SELECT * FROM customer_segments WHERE as_of_date = :d ORDER BY customer_key", {"d": as_of})
        features = wh.scalar("SELECT COUNT(*) FROM customer_features WHERE as_of_date = :d", {"d": as_of})
    assert len(first) == features > 100
    assert first["customer_key"].is_unique
    assert first["segment_name"].notna().all()
    assert first["rfm_segment"].notna().all() and first["rfm_r"].between(1, 5).all()

    # Re-running the same date replaces its rows: no duplicates, same labels.
    run = dag.test(logical_date=logical + dt.timedelta(seconds=1), run_conf={**conf, "as_of_date": as_of.isoformat()})
    assert run.state == "success"
    with Warehouse(warehouse_url) as wh:
        second = wh.query_df("SELECT * FROM customer_segments WHERE as_of_date = :d ORDER BY customer_key", {"d": as_of})
        keys = {"customer_features": "customer_key", "customers": "customer_key",
                "segment_assignments": "customer_key", "identity_map": "source_system || ':' || source_id",
                "quarantine": "source_table || source_key || reason"}
        for table, key in keys.items():
            dup = wh.scalar(f"SELECT COUNT(*) - COUNT(DISTINCT {key}) FROM {table} WHERE as_of_date = :d", {"d": as_of})
            assert dup == 0, table
        planted = wh.query_df(
            "SELECT t.reason AS planted, q.reason AS got FROM truth_planted_errors t LEFT JOIN quarantine q "
            "ON q.source_key = t.source_key AND q.as_of_date = :d", {"d": as_of})
    assert len(second) == len(first)
    # CRM: the first run delivered every published customer once; the re-run had nothing new to send.
    assert pushed == {k: 1 for k in first["customer_key"]} and receiver.customers() == pushed
    with Warehouse(warehouse_url) as wh:
        log = wh.query_df("SELECT target, run_id, SUM(acknowledged) AS n FROM crm_push_log GROUP BY 1, 2")
        outbox = wh.scalar("SELECT COUNT(DISTINCT customer_key) FROM crm_outbox")
    assert set(log["target"]) == {"outbox", "webhook"} and (log["n"] == len(first)).all() and len(log) == 2
    assert outbox == len(first)
    assert second[["customer_key", "segment_id", "segment_name"]].equals(first[["customer_key", "segment_id", "segment_name"]])
    assert (planted["planted"] == planted["got"]).all()

    # MLflow: one parent run per DAG run with tags, params, metrics and artifacts.
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["customer_segmentation"],
                              filter_string="tags.`airflow.dag_id` = 'customer_segmentation' "
                                            "AND tags.as_of_date = '2026-11-07'")
    assert len(runs) == 2  # one parent run per DAG run
    parent = runs.iloc[0]
    assert parent["status"] == "FINISHED"
    assert parent["metrics.quarantine.raw_orders.negative_value"] > 0
    assert parent["metrics.chosen_silhouette"] > 0
    assert parent["tags.git_sha"]
    assert parent["params.k_max"] == "5"
    children = mlflow.search_runs(experiment_names=["customer_segmentation"],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent['run_id']}'")
    candidates = children[children["tags.mlflow.runName"].str.startswith("k=")]
    assert sorted(candidates["params.k"].astype(int)) == [3, 4, 5]
    assert (children["tags.mlflow.runName"] == "clv models").any()
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"], "segmentation")}
    assert "segmentation/segment_profiles.csv" in artifacts
    inputs = client.get_run(parent["run_id"]).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "customer_features@2026-11-07"
    profiles = client.download_artifacts(parent["run_id"], "segmentation/segment_profiles.csv")
    text = open(profiles).read()
    assert "@" not in text  # no emails or other raw PII in artifacts
    logged = client.get_run(parent["run_id"]).data
    assert not any("@" in str(v) for v in [*logged.params.values(), *logged.tags.values()])
    assert "archetype_ari" in logged.metrics and "bootstrap_mean_ari" in logged.metrics
    # Economics and the report: a self-contained HTML file, in the reports folder and in MLflow.
    assert "economics.share_of_customers_paying_for_all" in logged.metrics
    reports = [a.path for a in client.list_artifacts(parent["run_id"], "report")]
    assert reports == ["report/segment_report_2026-11-07.html"]
    from include.runtime.paths import reports_dir

    assert (reports_dir() / "segment_report_2026-11-07.html").stat().st_size > 20_000
    # Identity: the first run trained and logged a Splink model; the re-run reused it.
    first_run = runs.iloc[1]
    assert first_run["metrics.identity.model_reused"] == 0 and parent["metrics.identity.model_reused"] == 1
    assert parent["tags.identity_model_source"].startswith("reused from MLflow run")
    assert logged.metrics["identity.eval.splink.pairwise_f1"] > logged.metrics["identity.eval.exact_email_phone.pairwise_f1"]
    assert {a.path for a in client.list_artifacts(parent["run_id"], "identity")} >= {
        "identity/match_weights_chart.html", "identity/m_u_parameters.csv", "identity/evaluation.csv"}
    model_runs = children[children["tags.identity_model"] == "splink"] if "tags.identity_model" in children else []
    assert len(model_runs) == 0  # the re-run logged no new model
    assert abs(logged.metrics["clv.holdout_aggregate_error_pct"]) < 25
    assert "clv.segment_value_spearman" in logged.metrics
    assert {a.path for a in client.list_artifacts(parent["run_id"], "clv")} >= {
        "clv/holdout_calibration.png", "clv/holdout_calibration.csv", "clv/segment_clv_check.csv"}
    with Warehouse(warehouse_url) as wh:
        clv = wh.query_df("SELECT * FROM customer_clv WHERE as_of_date = :d", {"d": as_of})
    assert len(clv) == features and clv["customer_key"].is_unique
    numeric = clv.select_dtypes("number")
    assert not numeric.isna().any().any() and (numeric >= 0).all().all()

    # Quality gate: a segment below min_jaccard blocks publishing; last week's labels carry forward.
    run = dag.test(logical_date=dt.datetime(2026, 11, 15, tzinfo=dt.UTC), run_conf={**conf, "min_jaccard": 1.0, "as_of_date": None})
    assert run.state == "success"
    with Warehouse(warehouse_url) as wh:
        gate = wh.query_df("SELECT gate_passed, gate_reason, published FROM segmentation_runs WHERE as_of_date = :d",
                           {"d": dt.date(2026, 11, 14)})
        carried = wh.query_df("SELECT customer_key, segment_id, model_run_id FROM customer_segments "
                              "WHERE as_of_date = :d ORDER BY customer_key", {"d": dt.date(2026, 11, 14)})
        fresh = wh.scalar("SELECT COUNT(*) FROM segment_assignments WHERE as_of_date = :d", {"d": dt.date(2026, 11, 14)})
        wh_dump = wh.query_df("SELECT as_of_date, gate_passed, published FROM segmentation_runs").to_string()
    assert len(gate) == 1, wh_dump
    assert not gate["gate_passed"][0] and not gate["published"][0]
    assert "bootstrap Jaccard" in gate["gate_reason"][0] and "min_jaccard 1.0" in gate["gate_reason"][0]
    assert fresh > 0  # the model's labels are kept, just not published
    assert carried["customer_key"].tolist() == second["customer_key"].tolist()
    assert (carried["model_run_id"] == second["model_run_id"]).all()
    receiver.__exit__(None, None, None)


def test_bad_data_fails_the_extract_task(dagbag, warehouse_url, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    dag = dagbag.dags["customer_segmentation"]
    run = dag.test(logical_date=dt.datetime(2026, 11, 15, tzinfo=dt.UTC),
                   run_conf={"max_bad_share": 0.0001})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    # A data error is a finding: failed on the first try, never up for retry.
    assert (states["extract_validate"], tries["extract_validate"]) == ("failed", 1)
    assert states["publish_segments"] != "success"
    # The teardown closed this DAG run's MLflow run as FAILED, naming the failed task.
    assert states["close_mlflow_run"] == "success"
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    (parent,) = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("customer_segmentation").experiment_id],
        filter_string=f"tags.`airflow.run_id` = '{run.run_id}'")
    assert parent.info.status == "FAILED"
    assert "extract_validate" in parent.data.tags["failed_tasks"]


def test_a_misspelt_setting_in_the_conf_fails_the_first_task_naming_it(dagbag, warehouse_url, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    dag = dagbag.dags["customer_segmentation"]
    run = dag.test(logical_date=dt.datetime(2026, 11, 15, tzinfo=dt.UTC), run_conf={"k_mx": 5})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["extract_validate"] == "failed"  # a finding: no retry
