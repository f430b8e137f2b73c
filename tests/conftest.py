"""Test set-up: a fresh, isolated Airflow home, data folder and MLflow store per session.

The environment is set here, before anything imports Airflow or MLflow, so
the tests never touch the developer's ``data/`` folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="segmentation-tests-"))

os.environ["SEGMENTATION_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = "t" * 64
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
os.environ["PYTENSOR_FLAGS"] = f"compiledir={_SESSION_DIR / 'pytensor'}"
os.environ.pop("WAREHOUSE_URL", None)
os.environ.pop("SEGMENTATION_WAREHOUSE_CONN_ID", None)
for path in (str(ROOT), str(ROOT / "plugins")):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])

import datetime as dt  # noqa: E402

import pytest  # noqa: E402

#: Observation end of the generated test data and an as-of date inside it.
DATA_END = dt.date(2026, 11, 14)
AS_OF = dt.date(2026, 11, 7)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def demo_tables():
    """A small generated dataset (DataFrames), shared read-only by the session."""
    from include.demo.generate import DemoGenerator

    return DemoGenerator(400, seed=11, end_date=DATA_END).generate(show_progress=False)


def write_tables(url: str, tables: dict, prefix: str = "raw_") -> None:
    from include.runtime.warehouse import Warehouse

    with Warehouse(url) as wh:
        for name, frame in tables.items():
            if name.startswith(prefix) or prefix == "":
                wh.replace_table(name, frame)


@pytest.fixture
def warehouse_url(tmp_path, demo_tables) -> str:
    """A fresh DuckDB warehouse file holding the demo raw and truth tables."""
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    write_tables(url, demo_tables, prefix="")
    return url


@pytest.fixture
def wh(warehouse_url):
    from include.runtime.warehouse import Warehouse

    with Warehouse(warehouse_url) as w:
        yield w


@pytest.fixture(scope="session")
def airflow_db():
    """An initialised Airflow metadata database (``airflow db migrate``) for the session."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy(), timeout=300)
    return True
