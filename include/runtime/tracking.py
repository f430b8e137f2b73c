"""MLflow tracking: one parent run per DAG run, found again by its Airflow tags.

Every task of a DAG run logs into the same parent run: the first task to
call :func:`parent_run_id` creates it, later tasks (and re-runs of a task)
find it by the ``airflow.dag_id`` and ``airflow.run_id`` tags, so nothing
large travels through XCom and re-running a task never forks the history.
Only aggregate numbers, settings and non-PII artifacts are logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import subprocess
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from include.runtime.paths import REPO_ROOT, mlflow_artifact_root, mlflow_tracking_uri

log = logging.getLogger(__name__)

EXPERIMENT = os.environ.get("SEGMENTATION_MLFLOW_EXPERIMENT", "customer_segmentation")


def _mlflow():
    # SQLAlchemy 2.0 deprecation noise from MLflow's own SQL store; harmless.
    warnings.filterwarnings("ignore", message=".*noload.*")
    import mlflow

    mlflow.set_tracking_uri(mlflow_tracking_uri())
    return mlflow


def git_sha() -> str:
    """The repository's HEAD commit, ``$GIT_SHA``, or ``unknown``."""
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def experiment_id(name: str = EXPERIMENT) -> str:
    """Id of the experiment ``name``, created with the local artifact root if missing."""
    mlflow = _mlflow()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None if mlflow_tracking_uri().startswith("http") else mlflow_artifact_root()
    return mlflow.create_experiment(name, artifact_location=location)


def find_parent_run(dag_id: str, run_id: str) -> str | None:
    """The MLflow run of this DAG run, or ``None`` when no task has logged to it yet."""
    found = client().search_runs(
        [experiment_id()],
        filter_string=f"tags.`airflow.dag_id` = '{dag_id}' AND tags.`airflow.run_id` = '{run_id}'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


#: Parent runs this process already found or created: ``(tracking URI, dag_id, run_id) -> MLflow run id``.
_parent_runs: dict[tuple[str, str], str] = {}
# Held while a parent run is looked up or created, so that a background prefetch
# (RunInfo.prefetch_mlflow_run) and the stage's own call never create two runs.
_parent_lock = threading.Lock()


def parent_run_id(dag_id: str, run_id: str, as_of_date: dt.date) -> str:
    """The MLflow run of this DAG run, created on first use (looked up once per process)."""
    with _parent_lock:
        key = (mlflow_tracking_uri(), dag_id, run_id)
        if key not in _parent_runs:
            _parent_runs[key] = _find_or_create_parent_run(dag_id, run_id, as_of_date)
        return _parent_runs[key]


def _find_or_create_parent_run(dag_id: str, run_id: str, as_of_date: dt.date) -> str:
    found = find_parent_run(dag_id, run_id)
    if found:
        return found
    exp = experiment_id()
    client = _mlflow().MlflowClient()
    run = client.create_run(
        exp,
        run_name=f"{dag_id} as of {as_of_date.isoformat()}",
        tags={
            "airflow.dag_id": dag_id,
            "airflow.run_id": run_id,
            "as_of_date": as_of_date.isoformat(),
            "git_sha": git_sha(),
            "mlflow.source.name": "dags/customer_segmentation.py",
        },
    )
    log.info("MLflow run %s created for %s/%s", run.info.run_id, dag_id, run_id)
    return run.info.run_id


def client():
    return _mlflow().MlflowClient()


def log_metrics(run_id: str, metrics: Mapping[str, float], prefix: str = "", step: int = 0) -> None:
    """Log numeric metrics in one batch; NaN and infinite values are skipped."""
    from mlflow.entities import Metric

    now = int(dt.datetime.now().timestamp() * 1000)
    batch = [Metric(f"{prefix}{k}", float(v), now, step) for k, v in metrics.items()
             if v is not None and math.isfinite(float(v))]
    if batch:
        client().log_batch(run_id, metrics=batch)


def log_params(run_id: str, params: Mapping[str, Any], prefix: str = "") -> None:
    """Log settings as params (values must carry no PII or secrets)."""
    from mlflow.entities import Param

    existing = client().get_run(run_id).data.params
    batch = [Param(f"{prefix}{k}", str(v)[:6000]) for k, v in params.items()
             if f"{prefix}{k}" not in existing]
    if batch:
        client().log_batch(run_id, params=batch)


def log_table(run_id: str, frame: Any, artifact_file: str) -> None:
    """Log a DataFrame as a CSV artifact."""
    client().log_text(run_id, frame.to_csv(index=False), artifact_file)


#: Rows MLflow's schema inference reads for the column types in :func:`log_dataset`. Left to itself it
#: reads every value of every column in Python: 16 CPU-s for the 480,000 rows of ``customer_features``
#: (and 2.4 CPU-s more for its default digest), a quarter of the ``segment_customers`` task.
SCHEMA_ROWS = 10_000


def dataset_schema(frame: Any) -> Any | None:
    """MLflow's schema of ``frame``: column types read from its first :data:`SCHEMA_ROWS` rows, NULLs from all.

    A warehouse column holds one type, so its first rows tell it (a text column NULL in all of them
    is read whole; a numeric column's type is its dtype's); whether a column is required (has no
    NULL or NaN) is read from every row, vectorised. The same schema ``mlflow.data.from_pandas``
    infers, in well under a second; ``None`` where MLflow infers none.
    """
    mlflow = _mlflow()
    import pandas as pd
    from mlflow.types import ColSpec, Schema

    head = frame.head(SCHEMA_ROWS)
    unread = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(head[c]) and head[c].isna().all()]
    schemas = [mlflow.data.from_pandas(head.drop(columns=unread)).schema,
               *(mlflow.data.from_pandas(frame[[c]]).schema for c in unread)]
    if any(schema is None for schema in schemas):
        return None
    by_name = {spec.name: spec for schema in schemas for spec in schema.inputs}
    has_null = frame.isna().any()
    return Schema([ColSpec(by_name[c].type, c, required=not bool(has_null[c])) for c in frame.columns])


def dataset_digest(frame: Any) -> str:
    """A digest of every row and column name of ``frame`` (pandas' vectorised row hash, MD5; 8 hex digits as MLflow's)."""
    import hashlib

    import pandas as pd

    digest = hashlib.md5(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr((len(frame), [str(c) for c in frame.columns])).encode())
    return digest.hexdigest()[:8]


def log_dataset(run_id: str, frame: Any, name: str, context: str, table: str, as_of_date: dt.date) -> None:
    """Record ``frame`` (schema, row count, digest) as an input of the run.

    The schema and the digest are computed here (:func:`dataset_schema`, :func:`dataset_digest`)
    rather than by MLflow, which reads every value in Python.
    """
    mlflow = _mlflow()
    from mlflow.entities import DatasetInput, InputTag

    dataset = mlflow.data.from_pandas(frame, name=name, digest=dataset_digest(frame))
    dataset.schema = dataset_schema(frame)  # a cached_property: set, it is not inferred again
    tags = [InputTag("mlflow.data.context", context), InputTag("warehouse_table", table),
            InputTag("as_of_date", as_of_date.isoformat())]
    client().log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])


def child_run(parent_id: str, run_name: str, tags: Mapping[str, str] | None = None) -> str:
    """Create a run nested under ``parent_id`` (shown under it in the MLflow UI)."""
    c = client()
    parent = c.get_run(parent_id)
    run = c.create_run(parent.info.experiment_id, run_name=run_name,
                       tags={"mlflow.parentRunId": parent_id, **(tags or {})})
    return run.info.run_id


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark a (child) run terminated; the parent is closed by :func:`close_parent_run`."""
    client().set_terminated(run_id, status=status)


def close_parent_run(dag_id: str, run_id: str, failed_tasks: list[str]) -> str | None:
    """Close this DAG run's MLflow run: ``FAILED`` when any task failed, else ``FINISHED``.

    Called by the DAG's teardown task once every other task is done, so
    nothing logs to the run after it is closed. The failed tasks are kept as
    the tag ``failed_tasks``. Returns the final status, or ``None`` when no
    task had created the run.
    """
    parent = find_parent_run(dag_id, run_id)
    if parent is None:
        log.info("no MLflow run for %s/%s to close (no task logged to it)", dag_id, run_id)
        return None
    status = "FAILED" if failed_tasks else "FINISHED"
    if client().get_run(parent).info.status == "KILLED":
        status = "KILLED"  # a stop signal ended a task (kill_parent_run): keep saying so
    if failed_tasks:
        client().set_tag(parent, "failed_tasks", ", ".join(failed_tasks))
    client().set_terminated(parent, status=status)
    log.info("MLflow run %s closed %s%s", parent, status, f" (failed: {', '.join(failed_tasks)})" if failed_tasks else "")
    return status


def kill_parent_run(dag_id: str, run_id: str, task_id: str, reason: str) -> str | None:
    """Close this DAG run's MLflow run as ``KILLED`` because a stop signal ended ``task_id``.

    Called by the DAG's task wrapper as the stopped task unwinds, so the run does not stay
    RUNNING when the process ends before the teardown runs. Returns the MLflow run id, or
    ``None`` when no task had created the run.
    """
    parent = find_parent_run(dag_id, run_id)
    if parent is None:
        return None
    c = client()
    if "stopped" not in c.get_run(parent).data.tags:  # the task the signal stopped, not later ones refusing to start
        c.set_tag(parent, "stopped", f"{task_id}: {reason}"[:5000])
    c.set_terminated(parent, status="KILLED")
    log.warning("MLflow run %s closed KILLED (%s stopped: %s)", parent, task_id, reason)
    return parent


IDENTITY_MODEL_ARTIFACT = "identity/splink_model.json"


def log_identity_model(parent_id: str, model: dict, accepted: bool, as_of_date: dt.date,
                       reason: str) -> str:
    """Log a trained Splink model (settings JSON with m/u) in a child run; return its run id.

    The child run is tagged ``identity_model_accepted`` and ``as_of_date`` so a
    re-run of the date finds it with :func:`identity_model_for`.
    """
    import json

    run_id = child_run(parent_id, f"identity model as of {as_of_date.isoformat()}", tags={
        "identity_model": "splink", "identity_model_accepted": str(bool(accepted)).lower(),
        "identity_model_reason": reason[:500], "as_of_date": as_of_date.isoformat()})
    client().log_text(run_id, json.dumps(model, indent=2, sort_keys=True), IDENTITY_MODEL_ARTIFACT)
    finish_run(run_id)
    return run_id


def latest_identity_model() -> tuple[str, dict] | None:
    """The most recently logged accepted Splink model: ``(run_id, model)``, or ``None``."""
    import json

    c = client()
    found = c.search_runs([experiment_id()], filter_string="tags.identity_model_accepted = 'true'",
                          order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    run_id = found[0].info.run_id
    text = _mlflow().artifacts.load_text(f"runs:/{run_id}/{IDENTITY_MODEL_ARTIFACT}")
    return run_id, json.loads(text)


def identity_model_for(as_of_date: dt.date) -> tuple[str, dict] | None:
    """The accepted Splink model trained for ``as_of_date`` itself: ``(run_id, model)``, or ``None``.

    A date's model depends only on that date's records and the seed, so a
    re-run reuses it and the order in which dates run does not matter (the
    latest model of any date would make one date's keys depend on which date ran last).
    """
    import json

    c = client()
    found = c.search_runs([experiment_id()], filter_string=(
        f"tags.identity_model_accepted = 'true' and tags.as_of_date = '{as_of_date.isoformat()}' "
        "and tags.identity_model = 'splink'"), order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    run_id = found[0].info.run_id
    text = _mlflow().artifacts.load_text(f"runs:/{run_id}/{IDENTITY_MODEL_ARTIFACT}")
    return run_id, json.loads(text)
