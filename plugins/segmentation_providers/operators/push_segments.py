"""``PushSegmentsOperator``: send changed segment labels to one CRM target, exactly once."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

log = logging.getLogger(__name__)

#: Kept here, not imported from include.crm, so that parsing a DAG stays free of pandas.
TARGETS = ("outbox", "webhook", "hubspot", "salesforce")


class PushSegmentsOperator(BaseOperator):
    """Push the newest published labels to a CRM target; the target only ever moves forward.

    A run for as-of date ``d`` reads the labels of the newest complete date
    ``>= d`` (``customer_segments`` + CLV tier and priority), so re-running or
    backfilling an old date never sends older labels over newer ones. It sends
    only customers whose delivered content differs from those labels (plus
    anything the target rejected before), in batches, and records every batch
    in ``crm_push_log`` and the acknowledged keys in ``crm_push_state`` (see
    :mod:`include.crm.contract`). A re-run after a crash resumes at the first
    unacknowledged batch. The outbox takes the whole push as one set-based
    write, whatever ``batch_size`` says.

    Parameters
    ----------
    target
        ``outbox`` (warehouse table), ``webhook``, ``hubspot`` or ``salesforce``.
    conn_id
        Airflow connection of the target (ignored for ``outbox``).
    as_of_date
        ISO date of the run (templated); default: the run's as-of date. The
        labels sent are those of the newest complete date on or after it.
    batch_size
        Customers per request, capped at the target's limit (HubSpot 100);
        ignored by the outbox.
    dry_run
        Report what would be sent; send and record nothing.
    enabled_targets
        Targets switched on for this run (templated, e.g. from a DAG param);
        the task skips itself when ``target`` is not among them.
    hook_kwargs
        Passed to the hook (retries, backoff, rate limit).
    """

    template_fields: Sequence[str] = ("as_of_date", "dry_run", "enabled_targets")
    ui_color = "#e8f1fb"

    def __init__(self, *, target: str, conn_id: str | None = None, as_of_date: str | None = None,
                 batch_size: int = 100, dry_run: bool | str = False, enabled_targets: Any = None,
                 warehouse_url: str | None = None, hook_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.conn_id = conn_id
        self.as_of_date = as_of_date
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.enabled_targets = enabled_targets
        self.warehouse_url = warehouse_url
        self.hook_kwargs = hook_kwargs or {}

    @staticmethod
    def _warehouse_url() -> str:
        from segmentation_providers.hooks.warehouse import WarehouseHook

        return WarehouseHook().get_sqlalchemy_url()

    def _hook_class(self):
        from segmentation_providers.hooks import crm

        return {"outbox": crm.OutboxHook, "webhook": crm.WebhookHook, "hubspot": crm.HubSpotHook,
                "salesforce": crm.SalesforceBulkHook}[self.target]

    def get_hook(self, warehouse_url: str, warehouse: Any = None):
        """Build the target's hook (lazily, in ``execute``)."""
        cls = self._hook_class()
        if self.target == "outbox":
            return cls(warehouse_url, target=self.target, warehouse=warehouse)
        return cls(self.conn_id or cls.default_conn_name, **self.hook_kwargs)

    def _batch_size(self) -> int | None:
        limit = self._hook_class().max_batch_size
        return None if limit is None else min(self.batch_size, limit)

    def _enabled(self) -> bool:
        targets = self.enabled_targets
        if targets is None:
            return True
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.strip("[]").replace("'", "").replace('"', "").split(",")]
        return self.target in set(targets)

    def _resolve_date(self, context: Any) -> dt.date:
        from include.runtime.run import resolve_as_of_date

        params = context.get("params") or {}
        dag_run = context.get("dag_run")
        return resolve_as_of_date(self.as_of_date or params.get("as_of_date"), context.get("data_interval_end"),
                                  getattr(dag_run, "run_after", None))

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.crm.contract import (
            BatchOutcome,
            changed_since_last_ack,
            ensure_crm_tables,
            plan_batches,
            plan_push,
            record_batch,
        )
        from include.runtime.warehouse import Warehouse
        from segmentation_providers.hooks.crm import CrmHttpError

        if not self._enabled():
            raise AirflowSkipException(f"target {self.target} is not in crm_targets {self.enabled_targets}")
        as_of = self._resolve_date(context)
        dry_run = str(self.dry_run).lower() in ("true", "1", "yes")
        warehouse_url = self.warehouse_url or self._warehouse_url()
        run_id = context.get("run_id") or "manual"
        with Warehouse(warehouse_url) as wh:
            ensure_crm_tables(wh)
            plan = plan_push(wh, self.target, as_of)
            summary = {"target": self.target, "as_of_date": as_of.isoformat(),
                       "label_date": plan.label_date.isoformat(), "customers": plan.customers,
                       "newer_delivered": plan.newer_delivered, "dry_run": dry_run, "acknowledged": 0, "failed": 0}
            if plan.label_date != as_of:
                log.info("%s: run date %s, sending the newest published labels (%s): the target never goes "
                         "back to older labels", self.target, as_of, plan.label_date)
            if plan.newer_delivered:
                log.warning("%s: %d customers already hold labels newer than %s; they are not sent",
                            self.target, plan.newer_delivered, plan.label_date)
            if self.target == "outbox" and not dry_run:
                # Set-based: the changed set never leaves the warehouse.
                result = self.get_hook(warehouse_url, wh).deliver(run_id=run_id, as_of_date=as_of,
                                                                  label_date=plan.label_date)
                summary.update(changed=result["changed"], batches=int(result["changed"] > 0),
                               acknowledged=result["changed"], outbox_rows_written=result["written"])
                summary["unchanged"] = plan.customers - result["changed"] - plan.newer_delivered
                log.info("outbox: %d customers, %d differ from what the outbox holds, %d rows written",
                         plan.customers, result["changed"], result["written"])
                return summary
            changed = changed_since_last_ack(wh, self.target, plan.label_date)
            size = self._batch_size()
            batches = list(plan_batches(changed, size))
            summary.update(changed=len(changed), batches=len(batches),
                           unchanged=plan.customers - len(changed) - plan.newer_delivered)
            log.info("%s: %d customers, %d differ from what the target acknowledged, %d batches of <= %s",
                     self.target, plan.customers, len(changed), len(batches), size or "all")
            if dry_run:
                counts = changed.groupby("segment_name").size().to_dict() if len(changed) else {}
                log.info("dry run: would send %d customers to %s by segment: %s", len(changed), self.target, counts)
                summary["would_send_by_segment"] = counts
                return summary
            hook = self.get_hook(warehouse_url, wh)
            for batch in batches:
                try:
                    outcome = hook.push(batch)
                except CrmHttpError as exc:
                    # Audit the failure, then fail the task: Airflow's retry resumes at this batch.
                    record_batch(wh, target=self.target, run_id=run_id, as_of_date=as_of, batch=batch,
                                 outcome=BatchOutcome([], {}, exc.status_code, exc.attempts, str(exc)))
                    raise
                record_batch(wh, target=self.target, run_id=run_id, as_of_date=as_of, batch=batch, outcome=outcome)
                summary["acknowledged"] += len(outcome.acknowledged)
                summary["failed"] += len(outcome.failed)
                log.info("%s batch %d/%d: %d acknowledged, %d rejected (HTTP %d, %d attempt(s))", self.target,
                         batch.number, len(batches), len(outcome.acknowledged), len(outcome.failed),
                         outcome.status_code, outcome.attempts)
        if summary["failed"]:
            log.warning("%s: %d customers rejected; they stay unacknowledged and are retried next run",
                        self.target, summary["failed"])
        return summary
