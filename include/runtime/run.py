"""What a stage needs to know about its DAG run, built from the Airflow context or by hand."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.runtime.paths import default_warehouse_url
from include.runtime.settings import PipelineSettings, SettingsError, check_params

log = logging.getLogger(__name__)


def resolve_as_of_date(param: str | dt.date | None, data_interval_end: dt.datetime | None,
                       run_after: dt.datetime | None) -> dt.date:
    """The run's as-of date: the ``as_of_date`` param, else the last full day before the run.

    Scheduled and backfill runs use their data interval end; runs with no logical
    date (triggered through the REST API with ``logical_date: null``, or by an
    asset) have no data interval, so their ``run_after`` is used instead.
    """
    if isinstance(param, dt.date):
        return param
    if param:
        try:
            return dt.date.fromisoformat(str(param).strip())
        except ValueError as exc:
            raise SettingsError(f"param as_of_date={param!r} is not an ISO date (YYYY-MM-DD)") from exc
    moment = data_interval_end or run_after
    if moment is None:
        raise SettingsError("cannot derive the as-of date: no as_of_date param, data interval or run_after")
    return moment.date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class RunInfo:
    """What a task needs to know about its DAG run."""

    dag_id: str
    run_id: str
    as_of_date: dt.date
    settings: PipelineSettings
    warehouse_url: str

    @classmethod
    def from_context(cls, context: Mapping[str, Any], warehouse_url: str | None = None) -> RunInfo:
        """Build from an Airflow task context (read as a plain mapping).

        The trigger's conf is checked as well as the merged params, so a
        misspelt key fails the first task with its name instead of being ignored.
        """
        params = dict(context.get("params") or {})
        dag_run = context.get("dag_run")
        conf = dict(getattr(dag_run, "conf", None) or {})
        check_params({**conf, **params})
        as_of = resolve_as_of_date(
            params.get("as_of_date"),
            context.get("data_interval_end"),
            getattr(dag_run, "run_after", None),
        )
        return cls(
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            as_of_date=as_of,
            settings=PipelineSettings.from_params(params),
            warehouse_url=warehouse_url or default_warehouse_url(),
        )

    def mlflow_run(self) -> str:
        from include.runtime import tracking

        return tracking.parent_run_id(self.dag_id, self.run_id, self.as_of_date)

    def prefetch_mlflow_run(self) -> threading.Thread:
        """Find (or create) the run's MLflow run in a background thread; :meth:`mlflow_run` then returns it.

        Importing MLflow and opening its store cost a task process 2-3 CPU seconds (the first
        task of a new store also creates its tables, ~9 s): in a thread they overlap the
        stage's warehouse work, most of which runs in DuckDB with the GIL released. A failure
        here is left to the stage's own call of :meth:`mlflow_run`, which raises it.
        """
        def find() -> None:
            try:
                self.mlflow_run()
            except Exception:  # noqa: BLE001 - raised again, in the task's thread, by mlflow_run()
                log.debug("MLflow run prefetch failed; the stage will retry it", exc_info=True)

        thread = threading.Thread(target=find, name="mlflow-run-prefetch", daemon=True)
        thread.start()
        return thread

