"""Thread pools bounded to the cores a task may use.

OpenMP (scikit-learn), BLAS (NumPy, SciPy, PyTensor) and DuckDB each start one
thread per core by default. Two tasks side by side on two cores then run four
busy pools, and OpenMP's threads spin while they wait for a core: on a shared
2-core machine segmentation burnt 188 CPU-s with the default environment against
21 CPU-s with ``OMP_NUM_THREADS=1``, for no gain in wall time.

A task's budget is the cores this process may use divided by the tasks that can
run beside it::

    budget = max(1, cores // concurrent_tasks)

``concurrent_tasks`` is what the caller knows (the DAG's task wrapper: the executor's
parallelism, capped by how many stages of the DAG can run beside this one), else
``$SEGMENTATION_CONCURRENT_TASKS``, else 1 (``airflow dags test``, ``scripts/run_dates.py``,
a stage called by hand: one task at a time). ``$SEGMENTATION_TASK_THREADS`` sets the
budget outright, and an ``OMP_NUM_THREADS`` set by the caller is an upper bound.

:func:`limited` applies a budget for the length of a block, to

- the OpenMP and BLAS pools already loaded, through threadpoolctl;
- libraries loaded later and child processes, through ``OMP_NUM_THREADS`` and the
  BLAS variables (a library reads them when it loads); ``OMP_WAIT_POLICY=PASSIVE``
  makes an OpenMP thread that waits sleep instead of spinning on a core another
  process needs;
- DuckDB: every connection the project opens asks :func:`duckdb_config` for ``threads``
  (:class:`include.runtime.warehouse.DuckDBWarehouse`, the loader, Splink's connection).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable that sets a task's thread budget outright (an integer >= 1).
THREADS_VARIABLE = "SEGMENTATION_TASK_THREADS"
#: Environment variable telling how many tasks run side by side (``scripts/ui.sh`` sets it to the parallelism).
CONCURRENCY_VARIABLE = "SEGMENTATION_CONCURRENT_TASKS"
#: Variables sizing the pools of libraries loaded later in this process and of child processes.
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

#: The budget of the innermost :func:`limited` block, ``None`` outside any.
_in_force: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        from include.runtime.errors import PipelineFinding

        raise PipelineFinding(f"environment variable {name}={value!r} must be a whole number of at least 1")
    return number


def task_thread_budget(concurrent_tasks: int | None = None) -> int:
    """Threads each pool of a task may start: ``cores // concurrent_tasks``, at least 1.

    Parameters
    ----------
    concurrent_tasks
        Tasks that may run at the same time as this one, itself included; ``None`` reads
        ``$SEGMENTATION_CONCURRENT_TASKS`` (default 1).
    """
    explicit = _positive_int(THREADS_VARIABLE)
    if explicit is not None:
        budget = explicit
    else:
        if concurrent_tasks is None:
            concurrent_tasks = _positive_int(CONCURRENCY_VARIABLE) or 1
        budget = max(1, available_cores() // max(1, int(concurrent_tasks)))
    caller_bound = _positive_int("OMP_NUM_THREADS") if _in_force is None else None
    return min(budget, caller_bound) if caller_bound else budget


def current_budget() -> int:
    """The budget in force (inside :func:`limited`), else :func:`task_thread_budget` with no caller's knowledge."""
    return _in_force if _in_force is not None else task_thread_budget()


def duckdb_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config`` for ``duckdb.connect`` with ``threads`` set to the budget in force (unless already given)."""
    merged = dict(config or {})
    merged.setdefault("threads", current_budget())
    return merged


@contextmanager
def limited(threads: int | None = None) -> Iterator[int]:
    """Bound every thread pool of this process (and of child processes) to ``threads`` inside the block.

    ``None`` takes :func:`current_budget`. Nested blocks may only lower the bound. Yields the
    budget applied.
    """
    global _in_force
    from threadpoolctl import threadpool_limits

    budget = current_budget() if threads is None else max(1, int(threads))
    if _in_force is not None:
        budget = min(budget, _in_force)
    saved = {name: os.environ.get(name) for name in (*POOL_VARIABLES, "OMP_WAIT_POLICY", THREADS_VARIABLE)}
    previous = _in_force
    os.environ.update({name: str(budget) for name in (*POOL_VARIABLES, THREADS_VARIABLE)})
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _in_force = budget
    try:
        with threadpool_limits(limits=budget):
            yield budget
    finally:
        _in_force = previous
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def apply_to_process(concurrent_tasks: int = 1) -> int:
    """Size the pools of a process that runs tasks one at a time, before it imports NumPy or scikit-learn.

    Sets the pool variables (unless the caller set them) so that libraries size their pools
    once, when they load, instead of starting one thread per core and being bounded later.
    Returns the budget.
    """
    budget = task_thread_budget(concurrent_tasks)
    for name in POOL_VARIABLES:
        os.environ.setdefault(name, str(budget))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return budget
