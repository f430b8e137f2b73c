"""The DAG's tasks as plain functions: stage + warehouse + MLflow, no Airflow.

Each function takes a :class:`RunInfo` (built from the Airflow task context by
:meth:`RunInfo.from_context`, or by hand in tests and scripts), runs one stage
for the run's as-of date against the warehouse, logs to the DAG run's MLflow
run and returns a small JSON-able summary (which Airflow keeps as XCom).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.config import PipelineSettings, default_warehouse_url
from include.extract import BadDataError
from include.warehouse import Warehouse, WarehouseError

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
            raise ValueError(f"param as_of_date={param!r} is not an ISO date (YYYY-MM-DD)") from exc
    moment = data_interval_end or run_after
    if moment is None:
        raise ValueError("cannot derive the as-of date: no as_of_date param, data interval or run_after")
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
        """Build from an Airflow task context (read as a plain mapping)."""
        params = dict(context.get("params") or {})
        dag_run = context.get("dag_run")
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
        from include import tracking

        return tracking.parent_run_id(self.dag_id, self.run_id, self.as_of_date)


def extract_validate(run: RunInfo) -> dict[str, Any]:
    """Validate raw tables into staging and quarantine; fail above the bad-row threshold."""
    from include import tracking
    from include.extract import extract_and_validate

    mlflow_run = run.mlflow_run()
    settings = dataclasses.asdict(run.settings)
    tracking.log_params(mlflow_run, {k: json.dumps(v) if isinstance(v, dict) else v for k, v in settings.items()})
    with Warehouse(run.warehouse_url) as wh:
        try:
            reports = extract_and_validate(
                wh, run.as_of_date, max_bad_share=run.settings.max_bad_share,
                retention_runs=run.settings.staging_retention_runs,
            )
            failed = None
        except BadDataError as exc:
            failed = exc
            reports = None
        quarantine = wh.query_df(
            "SELECT source_table, reason, COUNT(*) AS rows FROM quarantine WHERE as_of_date = :d "
            "GROUP BY source_table, reason ORDER BY source_table, reason", {"d": run.as_of_date})
        extract_log = wh.query_df("SELECT * FROM extract_log WHERE as_of_date = :d ORDER BY source_table",
                                  {"d": run.as_of_date})
    metrics = {}
    for row in extract_log.itertuples(index=False):
        metrics[f"rows_staged.{row.source_table}"] = row.rows_staged
        metrics[f"rows_quarantined.{row.source_table}"] = row.rows_quarantined
    for row in quarantine.itertuples(index=False):
        metrics[f"quarantine.{row.source_table}.{row.reason}"] = row.rows
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, quarantine, "extract/quarantine_counts.csv")
    if failed is not None:
        tracking.finish_run(mlflow_run, "FAILED")
        raise failed
    return {"as_of_date": run.as_of_date.isoformat(), "mlflow_run_id": mlflow_run,
            "quarantined": int(quarantine["rows"].sum()) if len(quarantine) else 0,
            "tables": {r.table: r.rows_staged for r in reports}}


def resolve_identity(run: RunInfo) -> dict[str, Any]:
    """Link identity records into customers; reuse or train and log the Splink model."""
    from include import identity_splink, tracking
    from include.identity import resolve_identities

    settings = run.settings
    mlflow_run = run.mlflow_run()
    model, source = None, "exact rule"
    if settings.identity_method == "splink" and not settings.identity_retrain:
        found = tracking.latest_identity_model()
        if found is not None:
            source, model = f"reused from MLflow run {found[0]}", found[1]
    with Warehouse(run.warehouse_url) as wh:
        out = resolve_identities(wh, run.as_of_date, method=settings.identity_method,
                                 threshold=settings.identity_match_threshold, model=model,
                                 seed=settings.seed, u_max_pairs=settings.identity_u_max_pairs)
    metrics = dict(out.result.metrics)
    metrics["model_reused"] = float(model is not None and not out.model_trained)
    tags = {"identity_method": settings.identity_method}
    if out.model is not None:
        if out.model_trained:
            missing, minor = identity_splink.untrained_levels(out.model)
            if minor:
                log.warning("identity model: rare levels left at Splink defaults: %s", "; ".join(minor))
            f1 = metrics.get("eval.splink.pairwise_f1")
            accepted = not missing and (f1 is None or f1 >= settings.identity_min_f1)
            reason = ("untrained exact-match levels: " + "; ".join(missing) if missing else
                      f"F1 {f1:.4f} vs min {settings.identity_min_f1}" if f1 is not None else "trained")
            model_run = tracking.log_identity_model(mlflow_run, out.model, accepted, run.as_of_date, reason)
            source = f"trained here (MLflow run {model_run}, {'accepted' if accepted else 'NOT accepted'}: {reason})"
        tracking.log_table(mlflow_run, identity_splink.m_u_table(out.model), "identity/m_u_parameters.csv")
        tracking.client().log_text(mlflow_run, identity_splink.match_weights_chart_html(out.model),
                                   "identity/match_weights_chart.html")
    tags["identity_model_source"] = source[:500]
    for key, value in tags.items():
        tracking.client().set_tag(mlflow_run, key, value)
    if out.evaluation is not None:
        tracking.log_table(mlflow_run, out.evaluation, "identity/evaluation.csv")
        log.info("identity evaluation against generator truth:\n%s", out.evaluation.round(4).to_string(index=False))
    tracking.log_metrics(mlflow_run, metrics, prefix="identity.")
    log.info("identity model: %s", source)
    summary = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("eval.") or k.endswith("f1")}
    summary["model"] = source
    return summary


def build_features(run: RunInfo) -> dict[str, Any]:
    """Compute ``customer_features`` for the as-of date in the warehouse."""
    from include import tracking
    from include.features import build_customer_features

    with Warehouse(run.warehouse_url) as wh:
        metrics = build_customer_features(wh, run.as_of_date, run.settings.support_cost_by_channel)
    tracking.log_metrics(run.mlflow_run(), metrics)
    return {"customers": int(metrics["features_customers"])}


def segment_customers(run: RunInfo) -> dict[str, Any]:
    """Fit segments on the date's features, check their stability, name them, keep ids stable.

    Writes model labels, profiles and centroids; every candidate k is a nested
    MLflow run, so the MLflow UI compares them side by side.
    """
    import numpy as np
    import pandas as pd

    from include import tracking
    from include.features import load_features
    from include.segmentation import (
        bootstrap_stability,
        fit_segments,
        match_segment_ids,
        order_by_value,
        segment_profiles,
        z_profiles,
    )

    mlflow_run = run.mlflow_run()
    s = run.settings
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        features = load_features(wh, run.as_of_date)
        if features.empty:
            raise ValueError(f"customer_features has no rows for as_of_date={run.as_of_date}")
        previous, next_id = _previous_centroids(wh, run.as_of_date)
        truth = _archetypes(wh, run.as_of_date)
    tracking.log_dataset(mlflow_run, features.drop(columns=["as_of_date"]),
                         name=f"customer_features@{run.as_of_date.isoformat()}",
                         context="segmentation", table="customer_features", as_of_date=run.as_of_date)
    result = fit_segments(features, k_min=s.k_min, k_max=s.k_max, k=s.k, seed=s.seed,
                          silhouette_sample=s.silhouette_sample, algorithm=s.algorithm, n_init=s.n_init,
                          previous_k=None if previous is None else len(previous))
    for row in result.candidates.to_dict("records"):
        child = tracking.child_run(mlflow_run, f"k={int(row['k'])}", {"as_of_date": run.as_of_date.isoformat()})
        tracking.log_params(child, {"k": int(row["k"]), "algorithm": result.algorithm, "seed": s.seed,
                                    "n_init": s.n_init})
        tracking.log_metrics(child, {m: v for m, v in row.items() if m != "k"})
        tracking.finish_run(child)

    jaccard_by_model, bootstrap_ari = bootstrap_stability(
        features, result.labels, result.k, algorithm=result.algorithm, n_boot=s.n_bootstrap, seed=s.seed)
    ordered = order_by_value(features, result.labels)
    mapping, distance = match_segment_ids(z_profiles(features, ordered), previous,
                                          max_distance=s.max_match_distance, next_id=next_id)
    labels = np.array([mapping[v] for v in ordered])
    jaccard = pd.Series(jaccard_by_model[result.labels]).groupby(labels).first()
    profiles = segment_profiles(features, labels, run.as_of_date)
    profiles["jaccard"] = profiles["segment_id"].map(jaccard)
    profiles["match_distance"] = profiles["segment_id"].map(distance)
    profiles["model_run_id"] = mlflow_run
    failed = profiles[profiles["jaccard"] < s.min_jaccard]
    gate_reason = "; ".join(
        f"segment {r.segment_id} '{r.segment_name}' bootstrap Jaccard {r.jaccard:.2f} < min_jaccard {s.min_jaccard}"
        for r in failed.itertuples())
    archetype_ari = _archetype_ari(features, labels, truth)
    names = profiles.set_index("segment_id")["segment_name"]
    assignments = pd.DataFrame({
        "as_of_date": run.as_of_date, "customer_key": features["customer_key"],
        "segment_id": labels.astype("int64"), "segment_name": names.reindex(labels).to_numpy(),
        "model_run_id": mlflow_run,
    })
    centroids = z_profiles(features, labels).stack().rename("z_value").reset_index()
    centroids.columns = ["segment_id", "feature", "z_value"]
    centroids.insert(0, "as_of_date", run.as_of_date)
    summary_row = pd.DataFrame([{
        "as_of_date": run.as_of_date, "model_run_id": mlflow_run, "algorithm": result.algorithm, "k": result.k,
        "silhouette": result.metrics["chosen_silhouette"], "davies_bouldin": result.metrics["chosen_davies_bouldin"],
        "customers": len(assignments), "published": False, "min_jaccard": float(profiles["jaccard"].min()),
        "bootstrap_ari": bootstrap_ari, "gate_passed": failed.empty, "gate_reason": gate_reason or None,
        "archetype_ari": archetype_ari,
    }])
    with Warehouse(run.warehouse_url) as wh:
        wh.replace_partition("segment_assignments", assignments, d)
        wh.replace_partition("segment_profiles", profiles, d)
        wh.replace_partition("segment_centroids", centroids, d)
        wh.replace_partition("segmentation_runs", summary_row, d)

    metrics = {**result.metrics, "bootstrap_mean_ari": bootstrap_ari, "bootstrap_min_jaccard": profiles["jaccard"].min(),
               "segments_matched_to_previous": float(len(distance)),
               "segments_new_ids": float(result.k - len(distance)),
               "gate_passed": float(failed.empty)}
    if distance:
        metrics["segment_match_mean_distance"] = float(np.mean(list(distance.values())))
    if archetype_ari is not None:
        metrics["archetype_ari"] = archetype_ari
    for r in profiles.itertuples():
        metrics[f"jaccard.segment_{r.segment_id}"] = r.jaccard
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_params(mlflow_run, {"chosen_k": result.k, "algorithm_used": result.algorithm})
    for row in result.candidates.to_dict("records"):
        tracking.log_metrics(mlflow_run, {f"{m}_by_k": v for m, v in row.items() if m != "k"}, step=int(row["k"]))
    tracking.log_table(mlflow_run, result.candidates, "segmentation/k_candidates.csv")
    tracking.log_table(mlflow_run, profiles, "segmentation/segment_profiles.csv")
    for r in profiles.itertuples():
        log.info("segment %d %-20s %6d customers  jaccard=%.2f  rule: %s", r.segment_id, r.segment_name,
                 r.customers, r.jaccard, r.name_rule)
    if gate_reason:
        log.warning("quality gate failed, labels will not be published: %s", gate_reason)
    log.info("segmentation: %s k=%d silhouette=%.3f bootstrap ARI=%.3f archetype ARI=%s", result.algorithm,
             result.k, result.metrics["chosen_silhouette"], bootstrap_ari,
             "n/a" if archetype_ari is None else f"{archetype_ari:.3f}")
    return {"k": result.k, "customers": len(assignments), "gate_passed": bool(failed.empty),
            "segments": profiles[["segment_id", "segment_name", "customers"]].to_dict("records")}


def _previous_centroids(wh: Warehouse, as_of_date: dt.date):
    """Centroids of the latest earlier published run, and the next unused segment id."""

    prev_date = wh.scalar(
        "SELECT MAX(as_of_date) FROM segmentation_runs WHERE as_of_date < :d AND published", {"d": as_of_date})
    next_id = wh.scalar("SELECT MAX(segment_id) FROM segment_centroids WHERE as_of_date <> :d", {"d": as_of_date})
    if prev_date is None:
        return None, (int(next_id) + 1 if next_id is not None else None)
    frame = wh.query_df("SELECT segment_id, feature, z_value FROM segment_centroids WHERE as_of_date = :d",
                        {"d": prev_date})
    if frame.empty:
        return None, (int(next_id) + 1 if next_id is not None else None)
    previous = frame.pivot(index="segment_id", columns="feature", values="z_value")
    return previous.astype(float).rename_axis(None, axis=1), (int(next_id) + 1 if next_id is not None else None)


def _archetypes(wh: Warehouse, as_of_date: dt.date):
    """Planted archetype per customer when the demo's ground truth is present (evaluation only)."""
    if not (wh.has_table("truth_identity") and wh.has_table("truth_persons")):
        return None
    return wh.query_df(
        "SELECT m.customer_key, MIN(p.archetype) AS archetype FROM identity_map m "
        "JOIN truth_identity t ON t.source_system = m.source_system AND t.source_id = m.source_id "
        "JOIN truth_persons p ON p.person_id = t.person_id WHERE m.as_of_date = :d GROUP BY m.customer_key",
        {"d": as_of_date})


def _archetype_ari(features, labels, truth) -> float | None:
    from sklearn.metrics import adjusted_rand_score

    if truth is None or truth.empty:
        return None
    joined = features[["customer_key"]].assign(segment=labels).merge(truth, on="customer_key")
    return float(adjusted_rand_score(joined["archetype"], joined["segment"])) if len(joined) else None


def publish_segments(run: RunInfo) -> dict[str, Any]:
    """Publish labels with hysteresis as ``customer_segments`` (raw label, published label, RFM map).

    Published labels are a fold over the raw labels in as-of order
    (:mod:`include.migration`), so this date and every later one are
    recomputed. A date whose quality gate failed carries the previous published
    labels forward, and the log and MLflow say which segment failed and why.
    """
    import pandas as pd

    from include import tracking
    from include.migration import apply_hysteresis, run_dates

    mlflow_run = run.mlflow_run()
    n_runs = run.settings.hysteresis_runs
    summary: dict[str, Any] = {}
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        dates = run_dates(wh)
        if run.as_of_date not in dates:
            raise ValueError(f"segmentation_runs has no row for as_of_date={run.as_of_date}; run segmentation first")
        start = dates.index(run.as_of_date)
        previous = _published(wh, dates[start - 1]) if start > 0 else None
        for date in dates[start:]:
            d = {"as_of_date": date}
            status = wh.query_df("SELECT gate_passed, gate_reason, model_run_id FROM segmentation_runs "
                                 "WHERE as_of_date = :as_of_date", d).iloc[0]
            raw = wh.query_df("SELECT customer_key, segment_id AS raw_segment_id FROM segment_assignments "
                              "WHERE as_of_date = :as_of_date", d)
            rfm = wh.query_df("SELECT customer_key, rfm_r, rfm_f, rfm_m, rfm_segment FROM customer_rfm "
                              "WHERE as_of_date = :as_of_date", d)
            names = wh.query_df("SELECT segment_id, segment_name FROM segment_profiles WHERE as_of_date = :as_of_date",
                                d).set_index("segment_id")["segment_name"].to_dict()
            gate_passed = bool(status["gate_passed"])
            if gate_passed:
                step = apply_hysteresis(raw, previous, n_runs)
                published, model_run_id = step.published, status["model_run_id"]
            else:
                if date == run.as_of_date:
                    log.warning("not publishing new labels for %s: %s", date, status["gate_reason"])
                    tracking.client().set_tag(mlflow_run, "gate_failure", str(status["gate_reason"])[:5000])
                step = None
                # Carry the previous labels forward; its RFM columns are replaced by this date's.
                carried = ["raw_segment_id", "rfm_r", "rfm_f", "rfm_m", "rfm_segment", "as_of_date",
                           "segment_name", "model_run_id"]
                published = (previous.drop(columns=carried, errors="ignore") if previous is not None
                             else pd.DataFrame(columns=["customer_key", "segment_id", "pending_segment_id",
                                                        "pending_runs"]))
                published = published.merge(raw, on="customer_key", how="left")
                model_run_id = previous["model_run_id"].iloc[0] if previous is not None and len(previous) else None
            old_names = ({} if previous is None else
                         previous.drop_duplicates("segment_id").set_index("segment_id")["segment_name"].to_dict())
            published = published.assign(
                as_of_date=date, model_run_id=model_run_id,
                segment_name=[names.get(i, old_names.get(i)) for i in published["segment_id"]],
            ).merge(rfm, on="customer_key", how="left")
            cols = ["as_of_date", "customer_key", "segment_id", "segment_name", "model_run_id", "rfm_r", "rfm_f",
                    "rfm_m", "rfm_segment", "raw_segment_id", "pending_segment_id", "pending_runs"]
            published = published[cols]
            wh.replace_partition("customer_segments", published, d)
            wh.run_script("UPDATE segmentation_runs SET published = :p WHERE as_of_date = :as_of_date",
                          {**d, "p": gate_passed})
            if date == run.as_of_date:
                held = step.held_back / step.raw_moves if step and step.raw_moves else 0.0
                summary = {"as_of_date": date.isoformat(), "published": gate_passed,
                           "published_customers": len(published), "raw_moves": step.raw_moves if step else 0,
                           "held_back_share": round(held, 4)}
                sizes = published.groupby(["segment_id", "segment_name"]).size()
            previous = published
        recomputed = [x.isoformat() for x in dates[start + 1:]]
    tracking.log_metrics(mlflow_run, {"published_customers": float(summary["published_customers"]),
                                      "published": float(summary["published"]),
                                      "hysteresis_raw_moves": float(summary["raw_moves"]),
                                      "hysteresis_held_back_share": summary["held_back_share"]})
    tracking.client().set_tag(mlflow_run, "published", str(summary["published"]).lower())
    for (seg, name), n in sizes.items():
        log.info("published segment %d %-20s %8d customers", seg, name, n)
    if recomputed:
        log.info("republished later dates so the hysteresis fold stays in order: %s", ", ".join(recomputed))
    log.info("hysteresis (%d runs): %d raw moves, %.1f%% held back", n_runs, summary["raw_moves"],
             100 * summary["held_back_share"])
    from include.config import reports_dir
    from include.report import report_path

    report = report_path(reports_dir(), run.as_of_date)
    summary.update({"mlflow_run_id": mlflow_run, "warehouse_url": _redact(run.warehouse_url),
                    "republished": recomputed, "report": str(report)})
    log.info("results: %s", json.dumps(summary))
    log.info("segment report for this run (written by render_report, also logged to MLflow): %s", report)
    return summary


def _published(wh: Warehouse, date: dt.date):
    frame = wh.query_df("SELECT customer_key, segment_id, segment_name, model_run_id, raw_segment_id, "
                        "pending_segment_id, pending_runs FROM customer_segments WHERE as_of_date = :d", {"d": date})
    if frame.empty:
        return None
    frame["pending_segment_id"] = frame["pending_segment_id"].astype("Int64")
    return frame


def track_migration(run: RunInfo) -> dict[str, Any]:
    """Transitions between consecutive published snapshots (this date's and every later pair) and the Markov view."""
    import pandas as pd

    from include import tracking
    from include.migration import markov_view, run_dates, transitions

    mlflow_run = run.mlflow_run()
    s = run.settings
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        dates = run_dates(wh, "customer_segments")
        if run.as_of_date not in dates:
            log.info("migration: nothing published for %s yet (no earlier labels to carry forward)", run.as_of_date)
            return {"transition_rows": 0, "markov_runs": 0, "recomputed_pairs": 0}
        i = dates.index(run.as_of_date)

        def snapshot(date):
            snap = wh.query_df("SELECT customer_key, segment_id, segment_name FROM customer_segments "
                               "WHERE as_of_date = :d", {"d": date})
            clv = wh.query_df("SELECT customer_key, clv_365d FROM customer_clv WHERE as_of_date = :d", {"d": date})
            names = snap.drop_duplicates("segment_id").set_index("segment_id")["segment_name"].to_dict()
            return snap, names, clv.set_index("customer_key")["clv_365d"] if len(clv) else None

        current = None
        for k in range(max(i, 1), len(dates)):
            before, after = snapshot(dates[k - 1]), snapshot(dates[k])
            frame = transitions(before[0], after[0], before[1], after[1], before[2], after[2])
            frame.insert(0, "to_date", dates[k])
            frame.insert(0, "from_date", dates[k - 1])
            wh.replace_partition("segment_transitions", frame, {"to_date": dates[k]})
            if k == i:
                current = frame
        window = wh.query_df(
            "SELECT * FROM segment_transitions WHERE to_date <= :d AND to_date > :lo ORDER BY to_date",
            {"d": run.as_of_date, "lo": dates[max(0, i - s.markov_window_runs)]}) if i > 0 else pd.DataFrame()
        snap, names, clv = snapshot(run.as_of_date)
    mix = snap.groupby("segment_id").size()
    mean_clv = (snap.assign(clv=snap["customer_key"].map(clv) if clv is not None else 0.0)
                .groupby("segment_id")["clv"].mean())
    frames = [g for _, g in window.groupby("to_date")] if len(window) else []
    view = markov_view(frames, mix, mean_clv, s.markov_periods)
    metrics = {"markov.current_value": view["current_value"], "markov.projected_value": view["projected_value"],
               "markov.window_runs": float(len(frames))}
    for seg in view["matrix"].index:
        metrics[f"markov.steady_state.segment_{seg}"] = float(view["steady_state"][seg])
        metrics[f"markov.projected_share.segment_{seg}"] = float(view["projected_mix"][seg] / max(mix.sum(), 1))
        metrics[f"markov.stay_probability.segment_{seg}"] = float(view["matrix"].loc[seg, seg])
    tracking.log_metrics(mlflow_run, metrics)
    matrix = view["matrix"].copy()
    matrix.index = [f"{i} {names.get(i, '')}" for i in matrix.index]
    matrix.columns = [f"{c} {names.get(c, '')}" for c in matrix.columns]
    tracking.log_table(mlflow_run, matrix.reset_index(names="from_segment"), "migration/markov_matrix.csv")
    if current is not None:
        tracking.log_table(mlflow_run, current, "migration/transitions.csv")
    log.info("migration: %d transition rows for %s; Markov over %d runs: value %.0f -> %.0f in %d periods",
             0 if current is None else len(current), run.as_of_date, len(frames), view["current_value"],
             view["projected_value"], s.markov_periods)
    return {"transition_rows": 0 if current is None else len(current), "markov_runs": len(frames),
            "recomputed_pairs": max(0, len(dates) - max(i, 1))}


class MigrationAlert(RuntimeError):
    """A migration check crossed its configured threshold."""


#: Failures that retrying cannot fix: bad or missing input, and alerts.
NOT_RETRYABLE: tuple[type[Exception], ...] = (BadDataError, WarehouseError, MigrationAlert)


def check_migration(run: RunInfo) -> dict[str, Any]:
    """Fail when more than ``alert_top_outflow`` of the top segment left it in this period.

    The top segment is the published segment with the highest mean 365-day revenue.
    This is the DAG's last task: it marks the MLflow run finished before any alert.
    """
    from include import tracking
    from include.migration import top_segment_outflow

    mlflow_run = run.mlflow_run()
    with Warehouse(run.warehouse_url) as wh:
        frame = wh.query_df("SELECT * FROM segment_transitions WHERE to_date = :d", {"d": run.as_of_date})
        # The top segment of the earlier snapshot: customers can only leave a segment that had them.
        top = wh.query_df(
            "SELECT p.segment_id, p.segment_name FROM segment_profiles p JOIN (SELECT DISTINCT segment_id "
            "FROM customer_segments WHERE as_of_date = (SELECT MAX(from_date) FROM segment_transitions "
            "WHERE to_date = :d)) c ON c.segment_id = p.segment_id "
            "WHERE p.as_of_date = (SELECT MAX(as_of_date) FROM segmentation_runs WHERE as_of_date <= :d AND published) "
            "ORDER BY p.monetary DESC", {"d": run.as_of_date}) if len(frame) else frame
    tracking.finish_run(mlflow_run)
    if frame.empty or top.empty:
        log.info("migration check: no previous snapshot to compare with")
        return {"checked": False}
    top_id, top_name = int(top["segment_id"].iloc[0]), top["segment_name"].iloc[0]
    outflow = top_segment_outflow(frame, top_id)
    tracking.log_metrics(mlflow_run, {"migration.top_segment_outflow": outflow})
    log.info("migration check: %.1f%% of segment %d '%s' left it (alert above %.1f%%)", 100 * outflow, top_id,
             top_name, 100 * run.settings.alert_top_outflow)
    if outflow > run.settings.alert_top_outflow:
        raise MigrationAlert(f"{outflow:.1%} of the top segment {top_id} '{top_name}' left it between "
                             f"{str(frame['from_date'].iloc[0])[:10]} and {run.as_of_date} "
                             f"(threshold alert_top_outflow={run.settings.alert_top_outflow:.0%})")
    return {"checked": True, "top_segment": top_name, "outflow": round(outflow, 4)}


def fit_clv(run: RunInfo) -> dict[str, Any]:
    """Fit BG/NBD + Gamma-Gamma as of the date, validate on a holdout, score every customer."""
    import tempfile

    from include import tracking
    from include.clv import (
        BetaGeoNBD,
        ClvSettings,
        GammaGammaSpend,
        build_clv_summary,
        calibration_plot,
        independence_check,
        load_champions,
        register_models,
        score_customers,
        validate_holdout,
    )

    s = run.settings
    settings = ClvSettings(unit_days=s.clv_unit_days, holdout_days=s.clv_holdout_days,
                           gross_margin=s.gross_margin, annual_discount_rate=s.annual_discount_rate)
    mlflow_run = run.mlflow_run()
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        build_clv_summary(wh, run.as_of_date, settings)
        full = wh.query_df("SELECT * FROM clv_summary WHERE as_of_date = :as_of_date AND period = 'full' "
                           "ORDER BY customer_key", d)
        calibration = wh.query_df("SELECT * FROM clv_summary WHERE as_of_date = :as_of_date "
                                  "AND period = 'calibration' ORDER BY customer_key", d)
        truth = _true_future_purchases(wh, run.as_of_date)
    if full.empty:
        raise ValueError(f"clv_summary is empty for as_of_date={run.as_of_date}: no valid orders on or before it")
    if s.clv_use_champion:
        # Score with the registered champion instead of refitting.
        bg, gg, champion_unit = load_champions()
        if champion_unit != settings.unit_days:
            raise ValueError(f"champion models use clv_unit_days={champion_unit}, this run {settings.unit_days}")
        bg_cal, counts = bg, {}
        log.info("CLV: scoring with the champion models %s / %s", bg.params(), gg.params())
    else:
        bg_cal = BetaGeoNBD.fit(calibration)
        bg = BetaGeoNBD.fit(full)
        gg, counts = GammaGammaSpend.fit(full)
    validation, table = validate_holdout(bg_cal, calibration, settings.holdout_days / settings.unit_days)
    corr = independence_check(full, settings.independence_warn)
    scores = score_customers(bg, gg, full, settings)
    scores.insert(0, "as_of_date", run.as_of_date)
    scores["model_run_id"] = mlflow_run
    metrics = {**validation, **counts, "gg_frequency_spend_corr": corr, "clv_customers": float(len(scores)),
               "clv_365d_total": float(scores["clv_365d"].sum()), "clv_mean_p_alive": float(scores["p_alive"].mean())}
    if truth is not None:
        joined = scores.merge(truth, on="customer_key", how="left").fillna({"true_purchases_365d": 0})
        actual = joined["true_purchases_365d"].sum()
        metrics["truth_365d_actual_purchases"] = float(actual)
        metrics["truth_365d_error_pct"] = float(100 * (joined["expected_purchases_365d"].sum() - actual) / max(actual, 1))
    with Warehouse(run.warehouse_url) as wh:
        wh.replace_partition("customer_clv", scores, d)
    tracking.log_metrics(mlflow_run, metrics, prefix="clv.")
    tracking.log_params(mlflow_run, {**{f"clv.bgnbd.{k}": round(v, 6) for k, v in bg.params().items()},
                                     **{f"clv.gamma_gamma.{k}": round(v, 6) for k, v in gg.params().items()},
                                     "clv.unit_days": settings.unit_days, "clv.holdout_days": settings.holdout_days})
    tracking.log_table(mlflow_run, table, "clv/holdout_calibration.csv")
    if not s.clv_use_champion:
        # A fit whose holdout error is within bounds becomes the champion.
        accept = abs(validation["holdout_aggregate_error_pct"]) <= s.clv_max_holdout_error_pct
        versions = register_models(mlflow_run, bg, gg, full, settings.unit_days, champion=accept)
        tracking.log_params(mlflow_run, {f"clv.registered.{k}": v for k, v in versions.items()})
        tracking.client().set_tag(mlflow_run, "clv_champion", str(accept).lower())
        if not accept:
            log.warning("CLV holdout error %.1f%% above %.1f%%: models registered but not made champion",
                        validation["holdout_aggregate_error_pct"], s.clv_max_holdout_error_pct)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/holdout_calibration.png"
        calibration_plot(table, path)
        tracking.client().log_artifact(mlflow_run, path, "clv")
    log.info("CLV: BG/NBD %s, Gamma-Gamma %s; holdout aggregate error %.1f%%, MAE %.2f, corr %.2f",
             {k: round(v, 3) for k, v in bg.params().items()}, {k: round(v, 3) for k, v in gg.params().items()},
             validation["holdout_aggregate_error_pct"], validation["holdout_mae"], validation["holdout_correlation"])
    return {"customers": len(scores), "holdout_aggregate_error_pct": round(validation["holdout_aggregate_error_pct"], 2)}


def _true_future_purchases(wh: Warehouse, as_of_date: dt.date):
    """True purchase days in the 365 days after the date, from the demo's ground truth (evaluation only).

    Only when the date is the end of the generated history, where ``truth_future_orders`` starts.
    """
    if not (wh.has_table("truth_future_orders") and wh.has_table("truth_identity")):
        return None
    first = wh.scalar("SELECT MIN(order_ts) FROM truth_future_orders")
    if first is None or (first.date() - as_of_date).days > 1:
        return None
    # A person split over several keys is counted once, on the smallest key.
    return wh.query_df(
        "SELECT pk.customer_key, COUNT(DISTINCT CAST(f.order_ts AS DATE)) AS true_purchases_365d "
        "FROM truth_future_orders f JOIN (SELECT t.person_id, MIN(m.customer_key) AS customer_key "
        "FROM truth_identity t JOIN identity_map m ON m.source_system = t.source_system "
        "AND m.source_id = t.source_id AND m.as_of_date = :d GROUP BY t.person_id) pk ON pk.person_id = f.person_id "
        "WHERE f.order_ts < :end GROUP BY pk.customer_key",
        {"d": as_of_date, "end": dt.datetime.combine(as_of_date + dt.timedelta(days=366), dt.time())})


def crosscheck_clv(run: RunInfo) -> dict[str, Any]:
    """Cross-check the segments' value order with their mean CLV; flag names CLV contradicts.

    """
    from include import tracking
    from include.clv import crosscheck_segments

    mlflow_run = run.mlflow_run()
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        profiles = wh.query_df("SELECT segment_id, segment_name, customers, monetary FROM segment_profiles "
                               "WHERE as_of_date = :as_of_date", d)
        clv = wh.query_df(
            "SELECT a.segment_id, AVG(c.clv_365d) AS mean_clv_365d, SUM(c.clv_365d) AS total_clv_365d, "
            "AVG(c.clv_365d_low) AS mean_clv_365d_low, AVG(c.clv_365d_high) AS mean_clv_365d_high, "
            "AVG(c.p_alive) AS mean_p_alive FROM segment_assignments a JOIN customer_clv c "
            "ON c.as_of_date = a.as_of_date AND c.customer_key = a.customer_key "
            "WHERE a.as_of_date = :as_of_date GROUP BY a.segment_id", d)
        if profiles.empty or clv.empty:
            raise ValueError(f"segment_profiles or customer_clv is empty for as_of_date={run.as_of_date}")
        check, spearman = crosscheck_segments(profiles, clv)
        check.insert(0, "as_of_date", run.as_of_date)
        wh.replace_partition("segment_clv_check", check, d)
    flagged = check[check["flag"]]
    metrics = {"clv.segment_value_spearman": spearman, "clv.segments_flagged": float(len(flagged))}
    for r in check.itertuples():
        metrics[f"clv.mean_clv_365d.segment_{r.segment_id}"] = r.mean_clv_365d
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, check, "clv/segment_clv_check.csv")
    for r in flagged.itertuples():
        log.warning("segment %d '%s': %s", r.segment_id, r.segment_name, r.reason)
    if len(flagged):
        tracking.client().set_tag(mlflow_run, "clv_contradictions",
                                  "; ".join(f"{r.segment_name}: {r.reason}" for r in flagged.itertuples())[:5000])
    log.info("CLV cross-check: Spearman(value order, mean CLV) = %.2f; %d segment(s) flagged", spearman, len(flagged))
    return {"spearman": round(spearman, 3), "flagged": flagged["segment_name"].tolist()}


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def build_economics(run: RunInfo) -> dict[str, Any]:
    """Segment economics, profit concentration and intervention priorities for the as-of date."""
    from include import tracking
    from include.economics import EconomicsSettings
    from include.economics import build_economics as build

    settings = EconomicsSettings(gross_margin=run.settings.gross_margin,
                                 servicing_cost_per_customer=run.settings.servicing_cost_per_customer,
                                 servicing_cost_per_order=run.settings.servicing_cost_per_order)
    with Warehouse(run.warehouse_url) as wh:
        figures = build(wh, run.as_of_date, settings, run.settings.playbook_path)
        table = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d ORDER BY profit DESC",
                            {"d": run.as_of_date})
    mlflow_run = run.mlflow_run()
    tracking.log_metrics(mlflow_run, {k: v for k, v in figures.items() if isinstance(v, int | float)},
                         prefix="economics.")
    tracking.log_table(mlflow_run, table, "economics/segment_economics.csv")
    return figures


def render_report(run: RunInfo) -> dict[str, Any]:
    """Write the self-contained HTML segment report, log it to MLflow and log its path."""
    from include import tracking
    from include.config import reports_dir
    from include.report import write_report

    mlflow_run = run.mlflow_run()
    with Warehouse(run.warehouse_url) as wh:
        path = write_report(wh, run.as_of_date, reports_dir())
    tracking.client().log_artifact(mlflow_run, str(path), "report")
    log.info("segment report: %s (also in MLflow run %s under report/)", path, mlflow_run)
    return {"report": str(path)}
