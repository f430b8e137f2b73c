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
import signal
import subprocess
import sys
import tempfile
import threading
import time
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


def _end_when_orphaned(controller_pid: int) -> None:
    """SIGTERM this xdist worker once its controller is gone (a worker runs its test on without one).

    The SIGTERM handler of ``tests/airflow_stack.py`` then stops the worker's Airflow stack.
    """
    while os.getppid() == controller_pid:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


if _WORKER:
    threading.Thread(target=_end_when_orphaned, args=(os.getppid(),), name="end-when-orphaned", daemon=True).start()
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

#: The session's Airflow stack fixture (``segmentation_stack``), loaded as a plugin so pytest rewrites its asserts.
pytest_plugins = ["tests.airflow_stack"]

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
#
# pytest-xdist 3.8's own ``loadgroup`` does not group under pytest 9 (it renames ``item._nodeid``, which
# pytest 9 no longer reads), and a test without an ``xdist_group`` mark would be a unit of its own there,
# so a module-scoped fixture would be built once on each worker using it. Here the workers work out the
# units while collecting (tests sharing a fixture instance, or an ``xdist_group`` name, are one unit),
# write them to the run's folder, and ``UnitScheduling`` (the controller's scheduler for
# ``--dist loadgroup``) hands out whole units, longest first, so the workers end at about the same time.

#: Session fixtures made once per run rather than once per worker: every test using one runs on one worker.
ONE_WORKER_FIXTURES = frozenset({"segmentation_stack"})
#: Seconds per test (setup + call + teardown) from a measured run; ``--store-durations`` rewrites it.
DURATIONS_FILE = Path(__file__).with_name("durations.json")
#: Assumed seconds of a test the durations file does not know yet (a new test): slow ones go early.
_UNKNOWN_SECONDS = {True: 60.0, False: 1.0}
#: ``nodeid -> unit``, written by the workers while collecting, read by the controller's scheduler.
_UNITS_FILE = _RUN_DIR / "work-units.json"


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help=f"write each test's seconds to {DURATIONS_FILE.name} (the longest start first next time)")


def _shared_keys(item) -> list[tuple]:
    """What ``item`` shares with other tests: ``xdist_group`` names, module/class/package fixtures, ``ONE_WORKER_FIXTURES``."""
    keys = [("xdist_group", str(m.args[0] if m.args else m.kwargs.get("name", "default")))
            for m in item.iter_markers("xdist_group")]
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        scope = defs[-1].scope
        if scope == "session" and name in ONE_WORKER_FIXTURES:
            keys.append(("session", name))
        elif scope == "package":
            keys.append((defs[-1].baseid, name))
        elif scope in ("module", "class"):
            keys.append((str(item.path), name))
    return keys


def work_units(items) -> list[str]:
    """Per item, its unit: tests linked by anything they share (transitively) are one unit, named after them."""
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple, int] = {}
    shared: dict[int, set[str]] = defaultdict(set)
    for i, item in enumerate(items):
        for key in _shared_keys(item):
            shared[i].add(key[-1])
            parent[root(i)] = root(first_with.setdefault(key, i))
    names: dict[int, set[str]] = defaultdict(set)
    for i, what in shared.items():
        names[root(i)] |= what
    return [f"{items[root(i)].nodeid.split('::')[0]}::{'+'.join(sorted(names[root(i)]))}" if i in shared
            else items[i].nodeid for i in range(len(items))]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """In an xdist worker: order the units longest first and write them for the controller's scheduler."""
    if _WORKER is None:
        return
    units = work_units(items)
    known = json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.exists() else {}
    seconds: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    for i, (item, unit) in enumerate(zip(items, units, strict=True)):
        seconds[unit] += known.get(item.nodeid, _UNKNOWN_SECONDS[item.get_closest_marker("slow") is not None])
        first.setdefault(unit, i)
    order = sorted(range(len(items)), key=lambda i: (-seconds[units[i]], first[units[i]], i))
    items[:] = [items[i] for i in order]
    # Every worker collects the same tests and writes the same file; the rename makes each write whole.
    partial = _UNITS_FILE.with_suffix(f".{_WORKER}")
    partial.write_text(json.dumps({item.nodeid: units[i] for i, item in zip(order, items, strict=True)}))
    partial.replace(_UNITS_FILE)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: whole units (see ``work_units``) in the order the workers collected them."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        _units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._units is None:  # called once every worker finished collecting, so the file is there
                self._units = json.loads(_UNITS_FILE.read_text())
            return self._units.get(nodeid, nodeid)

    config.option.loadscopereorder = False  # keep the longest-first order (not: most tests first)
    return UnitScheduling(config, log)


_measured: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    # Also in the xdist controller, which receives the workers' reports.
    _measured[report.nodeid] += report.duration


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.getoption("store_durations") or _WORKER is not None:
        return
    kept = json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.exists() else {}
    kept.update({nodeid: round(s, 1) for nodeid, s in _measured.items()})
    DURATIONS_FILE.write_text(json.dumps(dict(sorted(kept.items())), indent=0) + "\n")
    terminalreporter.write_line(f"durations of {len(_measured)} tests written to {DURATIONS_FILE}")
