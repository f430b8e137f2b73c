"""Test set-up: a fresh, isolated Airflow home, data folder and MLflow store per session.

The environment is set here, before anything imports Airflow or MLflow, so
the tests never touch the developer's ``data/`` folder.

``scripts/test.sh`` runs the suite on two pytest-xdist workers (``--dist loadgroup``).
Each worker is its own session with its own data folder, Airflow home and MLflow
store; the run's workers share one folder above them and its PyTensor compile
cache (PyTensor locks its compile directory, so workers reuse each other's
compiled models). Tests that share an expensive fixture are kept on one worker
(see ``pytest_collection_modifyitems``), and the longest start first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: pytest-xdist's worker id ("gw0", ...); None in the controller and in a run without workers.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
#: Whether this process made the run's folder (and removes it at the end).
_OWNS_RUN_DIR = not (_WORKER and os.environ.get("SEGMENTATION_TEST_RUN_DIR"))
if _OWNS_RUN_DIR:
    _RUN_DIR = Path(tempfile.mkdtemp(prefix="segmentation-tests-"))
    # Inherited by the workers, which start after the controller imported this file.
    os.environ["SEGMENTATION_TEST_RUN_DIR"] = str(_RUN_DIR)
else:
    _RUN_DIR = Path(os.environ["SEGMENTATION_TEST_RUN_DIR"])
_SESSION_DIR = _RUN_DIR / (_WORKER or "main")
_SESSION_DIR.mkdir(parents=True, exist_ok=True)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # Workers share the cores: one BLAS/OpenMP thread each instead of one per core each.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

os.environ["SEGMENTATION_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = "t" * 64
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
# One compile cache for the run's workers (``SEGMENTATION_TEST_PYTENSOR_DIR`` keeps one between runs).
os.environ["PYTENSOR_FLAGS"] = f"compiledir={os.environ.get('SEGMENTATION_TEST_PYTENSOR_DIR') or _RUN_DIR / 'pytensor'}"
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
    # A worker removes its own folder; the controller (after every worker ended) the run's.
    shutil.rmtree(_RUN_DIR if _OWNS_RUN_DIR else _SESSION_DIR, ignore_errors=True)


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


def copy_duckdb(source: Path, target: Path) -> str:
    """Copy a closed DuckDB file (and its write-ahead log, if one is left) to ``target``; return its URL."""
    for part in source.parent.glob(f"{source.name}*"):
        shutil.copy(part, target.parent / part.name.replace(source.name, target.name, 1))
    return f"duckdb:///{target}"


@pytest.fixture(scope="session")
def demo_warehouse_file(tmp_path_factory, demo_tables) -> Path:
    """The demo raw and truth tables written once to a DuckDB file; tests get copies of it."""
    path = tmp_path_factory.mktemp("demo-warehouse") / "warehouse.duckdb"
    write_tables(f"duckdb:///{path}", demo_tables, prefix="")
    return path


@pytest.fixture
def warehouse_url(tmp_path, demo_warehouse_file) -> str:
    """A fresh DuckDB warehouse file holding the demo raw and truth tables (a copy, for this test alone)."""
    return copy_duckdb(demo_warehouse_file, tmp_path / "warehouse.duckdb")


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


# -- Distribution over pytest-xdist workers ---------------------------------------------------------

#: Session fixtures made once per run rather than once per worker: every test using one runs on one worker.
ONE_WORKER_FIXTURES = frozenset({"segmentation_stack"})
#: Seconds per test (setup + call + teardown) from a measured run; ``--store-durations`` rewrites it.
DURATIONS_FILE = Path(__file__).with_name("durations.json")
#: Assumed seconds of a test the durations file does not know yet (a new test): slow ones go early.
_UNKNOWN_SECONDS = {True: 60.0, False: 1.0}


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help=f"write each test's seconds to {DURATIONS_FILE.name} (the longest start first next time)")


def _shared_fixture_keys(item) -> list[tuple]:
    """The fixture instances ``item`` shares with other tests: module/class/package ones and ``ONE_WORKER_FIXTURES``."""
    keys = []
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        scope = defs[-1].scope
        if scope == "session" and name in ONE_WORKER_FIXTURES:
            keys.append((name,))
        elif scope == "package":
            keys.append((defs[-1].baseid, name))
        elif scope in ("module", "class"):
            keys.append((str(item.path), name))
    return keys


def _work_units(items) -> list[str | None]:
    """Per item, the name of the tests it must share a worker with (union of shared fixture instances), or None."""
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple, int] = {}
    names: dict[int, set[str]] = defaultdict(set)
    for i, item in enumerate(items):
        for key in _shared_fixture_keys(item):
            names[i].add(key[-1])
            j = first_with.setdefault(key, i)
            parent[root(i)] = root(j)
    unit_names: dict[int, set[str]] = defaultdict(set)
    for i in names:
        unit_names[root(i)] |= names[i]
    units = []
    for i in range(len(items)):
        if i not in names:
            units.append(None)
            continue
        r = root(i)
        module = items[r].nodeid.split("::")[0]
        units.append(f"{module}::{'+'.join(sorted(unit_names[r]))}")
    return units


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Keep tests sharing a fixture instance on one worker; in a worker, order the work longest first.

    Under ``--dist loadgroup`` a test without an ``xdist_group`` mark is a unit of its own, so a
    module-scoped fixture would be built once on each worker that runs one of its tests. The
    mark added here (before xdist reads it) groups such tests. The order only changes in xdist
    workers: the controller hands units out in the order the workers collected them, so the
    longest units start first and the workers end at about the same time.
    """
    units = _work_units(items)
    for item, unit in zip(items, units, strict=True):
        if unit is not None and not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(unit))
    if _WORKER is None:
        return
    known = json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.exists() else {}
    seconds: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    keys = []
    for i, item in enumerate(items):
        marks = [m.args[0] if m.args else m.kwargs.get("name", "default") for m in item.iter_markers("xdist_group")]
        key = "_".join(sorted(map(str, marks))) if marks else item.nodeid
        seconds[key] += known.get(item.nodeid, _UNKNOWN_SECONDS[item.get_closest_marker("slow") is not None])
        first.setdefault(key, i)
        keys.append(key)
    order = sorted(range(len(items)), key=lambda i: (-seconds[keys[i]], first[keys[i]], i))
    items[:] = [items[i] for i in order]


_measured: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    # In the controller too (xdist forwards the workers' reports, their ids ending in "@<xdist_group>").
    nodeid = report.nodeid
    if nodeid.rfind("@") > nodeid.rfind("]"):
        nodeid = nodeid.rsplit("@", 1)[0]
    _measured[nodeid] += report.duration


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.getoption("store_durations") or _WORKER is not None:
        return
    kept = json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.exists() else {}
    kept.update({nodeid: round(s, 1) for nodeid, s in _measured.items()})
    DURATIONS_FILE.write_text(json.dumps(dict(sorted(kept.items())), indent=0) + "\n")
    terminalreporter.write_line(f"durations of {len(_measured)} tests written to {DURATIONS_FILE}")
