"""Thread budgets: cores divided among the tasks side by side, applied to OpenMP/BLAS, DuckDB and child processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from include.runtime import threads
from include.runtime.errors import PipelineFinding


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*threads.POOL_VARIABLES, "OMP_WAIT_POLICY", threads.THREADS_VARIABLE, threads.CONCURRENCY_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    return monkeypatch


def test_budget_is_the_cores_divided_among_the_tasks_side_by_side(clean_env):
    assert threads.task_thread_budget() == 8  # one task at a time (dags test, a stage called by hand)
    assert threads.task_thread_budget(2) == 4
    assert threads.task_thread_budget(3) == 2
    assert threads.task_thread_budget(16) == 1  # never 0
    clean_env.setenv(threads.CONCURRENCY_VARIABLE, "4")
    assert threads.task_thread_budget() == 2


def test_explicit_budget_and_a_callers_omp_bound(clean_env):
    clean_env.setenv(threads.THREADS_VARIABLE, "3")
    assert threads.task_thread_budget(2) == 3
    clean_env.setenv("OMP_NUM_THREADS", "1")  # the single-thread reference run stays single-threaded
    assert threads.task_thread_budget(2) == 1
    clean_env.setenv(threads.THREADS_VARIABLE, "0")
    with pytest.raises(PipelineFinding, match="SEGMENTATION_TASK_THREADS='0'"):
        threads.task_thread_budget()


def test_limited_bounds_openmp_blas_duckdb_and_child_processes(clean_env, tmp_path):
    import sklearn.cluster  # noqa: F401 - loads scikit-learn's OpenMP runtime
    from threadpoolctl import threadpool_info

    from include.runtime.warehouse import Warehouse

    with threads.limited(1) as budget:
        assert budget == threads.current_budget() == 1
        pools = threadpool_info()
        assert {p["user_api"] for p in pools} >= {"openmp", "blas"}
        assert all(p["num_threads"] == 1 for p in pools), pools
        assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
            assert wh.scalar("SELECT current_setting('threads')") == 1
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "1"
        with threads.limited(4) as inner:  # a nested block may only lower the bound
            assert inner == 1
    assert threads.current_budget() == 8
    assert "OMP_NUM_THREADS" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        assert wh.scalar("SELECT current_setting('threads')") == 8


def test_stage_adapters_run_inside_the_budget(clean_env):
    from include.stages import stage

    clean_env.setenv(threads.THREADS_VARIABLE, "1")
    seen = {}

    def adapter(run):
        seen["budget"] = threads.current_budget()
        seen["omp"] = os.environ.get("OMP_NUM_THREADS")
        return {}

    clean_env.setattr("include.stages.segmentation.segment_customers", adapter)
    stage("segment_customers")(None)
    assert seen == {"budget": 1, "omp": "1"}
