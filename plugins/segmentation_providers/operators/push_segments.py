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
    """Push the newest published labels to a CRM's own records; the target only ever moves forward.

    A run for as-of date ``d`` reads the labels of the newest complete date
    ``>= d`` (``customer_segments`` + CLV tier and priority), so re-running or
    backfilling an old date never sends older labels over newer ones. Each
    customer's labels go to every record it has in the target, found by the
    target's native id (:class:`include.crm.matching.Matching`: HubSpot and
    Salesforce records are the identity records of source system ``hubspot`` /
    ``salesforce`` by default; the outbox and the webhook are keyed by customer).
    Nothing is created: customers without a record are counted
    (``customers_without_record``). Records whose customer disappeared (a
    merge, an erasure) get the survivor's labels or a clear (``on_merge``).

    It sends only records whose delivered content differs from those labels
    (plus anything the target rejected before), in batches, and records every
    batch in ``crm_push_log`` (with its records counted as new, moved, renamed,
    updated, merged, cleared or erased), the acknowledged records in
    ``crm_push_state`` and the push in ``crm_push_runs`` (see
    :mod:`include.crm.contract`). A re-run after a crash resumes at the first
    unacknowledged batch. The outbox takes the whole push as one set-based
    write, whatever ``batch_size`` says.

    Parameters
    ----------
    target
        ``outbox`` (warehouse table), ``webhook``, ``hubspot`` or ``salesforce``.
    conn_id
        Airflow connection of the target (ignored for ``outbox``). Its extras
        may set ``match_source_system``, ``match_key``, ``create_missing`` and
        ``create_id_property`` (see :mod:`include.crm.matching`).
    as_of_date
        ISO date of the run (templated); default: the run's as-of date. The
        labels sent are those of the newest complete date on or after it.
    batch_size
        Records per request, capped at the target's limit (HubSpot 100);
        ignored by the outbox.
    dry_run
        Report what would be sent; send and record nothing.
    enabled_targets
        Targets switched on for this run (templated, e.g. from a DAG param);
        the task skips itself when ``target`` is not among them.
    matching
        Matching settings, over the connection's extras (the only place for
        the outbox).
    on_merge
        ``survivor`` (default) or ``clear`` (templated): what a record keyed by
        a customer key that no longer exists gets.
    hook_kwargs
        Passed to the hook (retries, backoff, rate limit).
    """

    template_fields: Sequence[str] = ("as_of_date", "dry_run", "enabled_targets", "on_merge")
    ui_color = "#e8f1fb"

    def __init__(self, *, target: str, conn_id: str | None = None, as_of_date: str | None = None,
                 batch_size: int = 100, dry_run: bool | str = False, enabled_targets: Any = None,
                 warehouse_url: str | None = None, hook_kwargs: dict[str, Any] | None = None,
                 matching: dict[str, Any] | None = None, on_merge: str | None = None, **kwargs: Any) -> None:
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
        self.matching = dict(matching or {})
        self.on_merge = on_merge

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

    def _matching(self, hook: Any):
        """The target's :class:`~include.crm.matching.Matching`: defaults, connection extras, then arguments."""
        from include.crm.matching import Matching

        config = dict(hook.matching_config()) if hook is not None and hasattr(hook, "matching_config") else {}
        config.update(self.matching)
        on_merge = str(self.on_merge).strip() if self.on_merge not in (None, "", "None") else None
        if on_merge:
            config["on_merge"] = on_merge
        return Matching.for_target(self.target, config)

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from include.runtime.errors import PipelineFinding

        if not self._enabled():
            raise AirflowSkipException(f"target {self.target} is not in crm_targets {self.enabled_targets}")
        try:
            return self._push(context)
        except PipelineFinding as exc:
            # Settings or data a retry cannot change (no CRM records matched, a bad matching setting): fail once.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    def _push(self, context: Any) -> dict[str, Any]:
        from include.crm.contract import (
            CHANGES,
            BatchOutcome,
            change_counts,
            changed_since_last_ack,
            ensure_crm_tables,
            plan_batches,
            plan_push,
            record_batch,
            record_push_run,
        )
        from include.runtime.warehouse import Warehouse
        from segmentation_providers.hooks.crm import CrmHttpError

        as_of = self._resolve_date(context)
        dry_run = str(self.dry_run).lower() in ("true", "1", "yes")
        warehouse_url = self.warehouse_url or self._warehouse_url()
        run_id = context.get("run_id") or "manual"
        with Warehouse(warehouse_url) as wh:
            ensure_crm_tables(wh)
            hook = self.get_hook(warehouse_url, wh)
            matching = self._matching(hook)
            plan = plan_push(wh, self.target, as_of, matching)
            summary = {"target": self.target, "as_of_date": as_of.isoformat(),
                       "label_date": plan.label_date.isoformat(), "matched_by": plan.matched_by,
                       "customers": plan.customers, "records": plan.records,
                       "customers_without_record": plan.customers_without_record,
                       "records_without_labels": plan.records_without_labels,
                       "ambiguous_records": plan.ambiguous_records, "newer_delivered": plan.newer_delivered,
                       "dry_run": dry_run, "acknowledged": 0, "failed": 0, "not_found": 0, "created": 0}
            if plan.label_date != as_of:
                log.info("%s: run date %s, sending the newest published labels (%s): the target never goes "
                         "back to older labels", self.target, as_of, plan.label_date)
            log.info("%s: records matched as %s: %d customers have %d records; %d customers have no record in "
                     "this CRM (not created); %d of its records belong to no segmented customer",
                     self.target, matching.describe(), plan.customers, plan.records,
                     plan.customers_without_record, plan.records_without_labels)
            if plan.customers_without_record and not matching.customer_keyed:
                log.warning("%s: %d of %d segmented customers have no record in this CRM: counted, not created",
                            self.target, plan.customers_without_record, plan.customers)
            if plan.ambiguous_records:
                log.warning("%s: %d record ids belong to several customers; they are left out",
                            self.target, plan.ambiguous_records)
            if plan.other_matching_records:
                log.warning("%s: %d records were delivered under another matching (an earlier configuration or "
                            "version); they are neither updated nor cleared now", self.target,
                            plan.other_matching_records)
            if plan.newer_delivered:
                log.warning("%s: %d records already hold labels newer than %s; they are not sent",
                            self.target, plan.newer_delivered, plan.label_date)
            if self.target == "outbox" and not dry_run:
                # Set-based: the changed set never leaves the warehouse.
                result = hook.deliver(run_id=run_id, as_of_date=as_of, label_date=plan.label_date,
                                      matching=matching, run_summary=summary)
                summary.update(changed=result["changed"], batches=int(result["changed"] > 0),
                               acknowledged=result["changed"], outbox_rows_written=result["written"],
                               **{c: result[c] for c in CHANGES})
                self._log_changes(summary)
                return summary
            changed = changed_since_last_ack(wh, self.target, plan.label_date, matching, dry_run=dry_run)
            size = self._batch_size()
            batches = list(plan_batches(changed, size))
            counts = change_counts(changed)
            summary.update(changed=len(changed), batches=len(batches))
            log.info("%s: %d records differ from what the target acknowledged, %d batches of <= %s",
                     self.target, len(changed), len(batches), size or "all")
            if dry_run:
                by_segment = (changed.groupby("segment_name", dropna=False).size() if len(changed) else {})
                would = {("(cleared)" if pd_isna(k) else k): int(v) for k, v in dict(by_segment).items()}
                log.info("dry run: would send %d records to %s by segment: %s; by change: %s", len(changed),
                         self.target, would, counts)
                summary["would_send_by_segment"] = would
                summary.update(counts)
                return summary
            summary.update({c: 0 for c in CHANGES})
            for batch in batches:
                try:
                    outcome = hook.push(batch)
                except CrmHttpError as exc:
                    # Audit the failure, then fail the task: Airflow's retry resumes at this batch.
                    record_batch(wh, target=self.target, run_id=run_id, as_of_date=as_of, batch=batch,
                                 outcome=BatchOutcome([], {}, exc.status_code, exc.attempts, str(exc)))
                    raise
                record_batch(wh, target=self.target, run_id=run_id, as_of_date=as_of, batch=batch, outcome=outcome)
                acked = batch.records[batch.records["record_id"].isin(outcome.acknowledged)]
                for change, n in change_counts(acked).items():
                    summary[change] += n
                summary["acknowledged"] += len(outcome.acknowledged)
                summary["failed"] += len(outcome.failed)
                summary["not_found"] += len(outcome.not_found)
                summary["created"] += len(outcome.created)
                log.info("%s batch %d/%d: %d acknowledged, %d rejected (%d not found), %d created "
                         "(HTTP %d, %d attempt(s))", self.target, batch.number, len(batches),
                         len(outcome.acknowledged), len(outcome.failed), len(outcome.not_found),
                         len(outcome.created), outcome.status_code, outcome.attempts)
            self._log_changes(summary)
            record_push_run(wh, summary, run_id)
        if summary["failed"]:
            log.warning("%s: %d records rejected (%d not found in the CRM); they stay unacknowledged and are "
                        "retried next run", self.target, summary["failed"], summary["not_found"])
        if summary["created"]:
            log.warning("%s: %d records created (create mode)", self.target, summary["created"])
        return summary

    def _log_changes(self, summary: dict[str, Any]) -> None:
        from include.crm.contract import CHANGES

        log.info("%s: sent %s", self.target, ", ".join(f"{summary.get(c, 0)} {c}" for c in CHANGES))


def pd_isna(value: Any) -> bool:
    return value is None or value != value  # NaN is the only value not equal to itself
