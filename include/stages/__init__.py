"""One thin adapter per DAG task: read from the warehouse, call the stage's package, write, log.

``STAGES`` maps each task id to ``module:function`` so the DAG can check a
stage name when it is parsed without importing pandas, scikit-learn or MLflow.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

STAGES: dict[str, str] = {
    "extract_validate": "include.stages.extract:extract_validate",
    "resolve_identity": "include.stages.identity:resolve_identity",
    "build_features": "include.stages.features:build_features",
    "segment_customers": "include.stages.segmentation:segment_customers",
    "backtest_claims": "include.stages.backtest:backtest_claims",
    "label_segments": "include.stages.labels:label_segments",
    "publish_segments": "include.stages.publish:publish_segments",
    "fit_clv": "include.stages.clv:fit_clv",
    "crosscheck_clv": "include.stages.clv:crosscheck_clv",
    "track_migration": "include.stages.migration:track_migration",
    "check_migration": "include.stages.migration:check_migration",
    "build_economics": "include.stages.economics:build_economics",
    "compare_schemes": "include.stages.comparison:compare_schemes",
    "run_experiment": "include.stages.experiment:run_experiment",
    "render_report": "include.stages.report:render_report",
}


def stage(name: str) -> Callable[..., dict[str, Any]]:
    """The adapter function of the DAG task ``name`` (imported on first use), its thread pools bounded.

    The adapter runs inside :func:`include.runtime.threads.limited`: OpenMP, BLAS and DuckDB
    get the task's thread budget (the one in force, e.g. set by the DAG's task wrapper, else
    the cores of this process), whoever calls it: the DAG, a benchmark or a test.
    """
    try:
        module, function = STAGES[name].split(":")
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}") from None
    adapter = getattr(importlib.import_module(module), function)

    @functools.wraps(adapter)
    def bounded(*args: Any, **kwargs: Any) -> dict[str, Any]:
        from include.runtime.threads import limited

        with limited():
            return adapter(*args, **kwargs)

    return bounded
