"""Project paths of the embedded defaults.

Everything the embedded stack writes lives under one data folder,
``$SEGMENTATION_DATA_DIR`` (default: ``<repo>/data``):

- ``warehouse.duckdb``: the DuckDB warehouse (raw, staged and output tables);
- ``airflow/``: ``AIRFLOW_HOME`` with the SQLite metadata database and logs;
- ``mlflow/mlflow.db`` and ``mlflow/artifacts/``: the local MLflow store;
- ``reports/``: HTML reports.

Production overrides the warehouse with an Airflow connection (see
``plugins/segmentation_providers/hooks/warehouse.py``) or ``$WAREHOUSE_URL``, and MLflow with
``$MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Return the data folder, creating it if needed."""
    path = Path(os.environ.get("SEGMENTATION_DATA_DIR", REPO_ROOT / "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_warehouse_url() -> str:
    """SQLAlchemy URL of the warehouse: ``$WAREHOUSE_URL`` or the embedded DuckDB file."""
    url = os.environ.get("WAREHOUSE_URL")
    if url:
        return url
    return f"duckdb:///{data_dir() / 'warehouse.duckdb'}"


def reports_dir() -> Path:
    """Folder of the HTML segment reports (``<data>/reports``)."""
    path = data_dir() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI: ``$MLFLOW_TRACKING_URI`` or the local SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    folder = data_dir() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Artifact location for new experiments in the local store."""
    folder = data_dir() / "mlflow" / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


