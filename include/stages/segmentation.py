"""DAG task ``segment_customers``: fit, check and name the segments of the date."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def segment_customers(run: RunInfo) -> dict[str, Any]:
    """Fit segments on the date's features, check their stability, name them, keep ids stable.

    Features with no data this run (the same value for every customer, e.g.
    no support or email table) are left out of the fit and recorded as not
    available in ``segmentation_runs.features_unavailable`` and MLflow.
    Writes model labels, profiles and centroids; every candidate k is a nested
    MLflow run, so the MLflow UI compares them side by side.
    """
    import json

    import numpy as np
    import pandas as pd

    from include.features.build import load_features
    from include.runtime import tracking
    from include.segmentation.model import (
        ORDER_RATE,
        available_features,
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
        features = load_features(wh, run.as_of_date)
        if features.empty:
            raise ValueError(f"customer_features has no rows for as_of_date={run.as_of_date}")
        previous, next_id = _previous_centroids(wh, run.as_of_date)
        truth = _archetypes(wh, run.as_of_date)
    columns, unavailable = available_features(features)
    for feature, reason in unavailable.items():
        log.warning("feature %s not available this run (%s): left out of clustering, plots and tables",
                    feature, reason)
    tracking.log_dataset(mlflow_run, features.drop(columns=["as_of_date"]),
                         name=f"customer_features@{run.as_of_date.isoformat()}",
                         context="segmentation", table="customer_features", as_of_date=run.as_of_date)
    result = fit_segments(features, k_min=s.k_min, k_max=s.k_max, k=s.k, seed=s.seed,
                          silhouette_sample=s.silhouette_sample, algorithm=s.algorithm, n_init=s.n_init,
                          previous_k=None if previous is None else len(previous),
                          numeric_columns=(*columns, ORDER_RATE), min_jaccard=s.min_jaccard)
    for row in result.candidates.to_dict("records"):
        child = tracking.child_run(mlflow_run, f"k={int(row['k'])}", {"as_of_date": run.as_of_date.isoformat()})
        tracking.log_params(child, {"k": int(row["k"]), "algorithm": result.algorithm, "seed": s.seed,
                                    "n_init": s.n_init})
        tracking.log_metrics(child, {m: v for m, v in row.items() if m != "k"})
        tracking.finish_run(child)

    jaccard_by_model, bootstrap_ari = bootstrap_stability(
        features, result.labels, result.k, algorithm=result.algorithm, n_boot=s.n_bootstrap, seed=s.seed,
        numeric_columns=result.numeric_columns, categorical_columns=result.categorical_columns)
    ordered = order_by_value(features, result.labels)
    mapping, distance = match_segment_ids(z_profiles(features, ordered, columns), previous,
                                          max_distance=s.max_match_distance, next_id=next_id)
    labels = np.array([mapping[v] for v in ordered])
    jaccard = pd.Series(jaccard_by_model[result.labels]).groupby(labels).first()
    # CLV is fitted beside this task; crosscheck_clv checks the value names against it before publishing
    # (reading it here would make names depend on which task finished first).
    profiles = segment_profiles(features, labels, run.as_of_date, columns)
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
    centroids = z_profiles(features, labels, columns).stack().rename("z_value").reset_index()
    centroids.columns = ["segment_id", "feature", "z_value"]
    centroids.insert(0, "as_of_date", run.as_of_date)
    summary_row = pd.DataFrame([{
        "as_of_date": run.as_of_date, "model_run_id": mlflow_run, "algorithm": result.algorithm, "k": result.k,
        "silhouette": result.metrics["chosen_silhouette"], "davies_bouldin": result.metrics["chosen_davies_bouldin"],
        "customers": len(assignments), "published": False, "min_jaccard": float(profiles["jaccard"].min()),
        "bootstrap_ari": bootstrap_ari, "gate_passed": failed.empty, "gate_reason": gate_reason or None,
        "archetype_ari": archetype_ari,
        "features_unavailable": json.dumps(unavailable, sort_keys=True),
    }])
    with Warehouse(run.warehouse_url) as wh:
        wh.replace_partition("segment_assignments", assignments, d)
        wh.replace_partition("segment_profiles", profiles, d)
        wh.replace_partition("segment_centroids", centroids, d)
        wh.replace_partition("segmentation_runs", summary_row, d)

    metrics = {**result.metrics, "bootstrap_mean_ari": bootstrap_ari, "bootstrap_min_jaccard": profiles["jaccard"].min(),
               "segments_matched_to_previous": float(len(distance)),
               "segments_new_ids": float(result.k - len(distance)),
               "gate_passed": float(failed.empty), "features_not_available": float(len(unavailable))}
    if distance:
        metrics["segment_match_mean_distance"] = float(np.mean(list(distance.values())))
    if archetype_ari is not None:
        metrics["archetype_ari"] = archetype_ari
    for r in profiles.itertuples():
        metrics[f"jaccard.segment_{r.segment_id}"] = r.jaccard
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_params(mlflow_run, {"chosen_k": result.k, "algorithm_used": result.algorithm,
                                     "features_used": ",".join(columns),
                                     "features_not_available": ",".join(unavailable) or "none"})

    for row in result.candidates.to_dict("records"):
        tracking.log_metrics(mlflow_run, {f"{m}_by_k": v for m, v in row.items() if m != "k"}, step=int(row["k"]))
    tracking.log_table(mlflow_run, result.candidates, "segmentation/k_candidates.csv")
    tracking.log_table(mlflow_run, profiles, "segmentation/segment_profiles.csv")
    for r in profiles.itertuples():
        log.info("segment %d %-40s %6d customers  jaccard=%.2f  rule: %s", r.segment_id, r.segment_name,
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



def rename_with_clv(wh: Warehouse, as_of_date: dt.date, clv_by_segment) -> dict[int, tuple[str, str]]:
    """Re-derive the date's segment names with mean CLV, so a value claim stands only where CLV agrees.

    Recomputes the naming inputs from ``customer_features`` and
    ``segment_assignments``, rewrites names, rules and standings in
    ``segment_profiles`` and ``segment_assignments``, and in
    ``customer_segments`` where this date's own labels are already published.
    Returns ``{segment id: (old name, new name)}`` for the names that changed.
    """
    import pandas as pd
    import sqlalchemy as sa

    from include.features.build import load_features
    from include.segmentation.model import available_features
    from include.segmentation.naming import name_segments, segment_stats

    d = {"d": as_of_date}
    features = load_features(wh, as_of_date)
    assigned = wh.query_df("SELECT customer_key, segment_id FROM segment_assignments WHERE as_of_date = :d", d)
    features = features.merge(assigned, on="customer_key")
    if features.empty:
        raise ValueError(f"segment_assignments has no rows matching customer_features for as_of_date={as_of_date}")
    columns, _ = available_features(features)
    labels = features["segment_id"].to_numpy()
    named = name_segments(segment_stats(features, labels, columns), clv=pd.Series(clv_by_segment))
    old = wh.query_df("SELECT segment_id, segment_name, model_run_id FROM segment_profiles WHERE as_of_date = :d", d)
    before = old.set_index("segment_id")["segment_name"].to_dict()
    changed = {int(s): (before.get(s), r.segment_name) for s, r in named.iterrows()
               if before.get(s) != r.segment_name}
    model_run = old["model_run_id"].iloc[0] if len(old) else None
    with wh.begin() as conn:
        for seg, r in named.iterrows():
            params = {**d, "s": int(seg), "n": r.segment_name, "rule": r.name_rule, "v": r.value_standing,
                      "st": r.standing, "m": model_run}
            conn.execute(sa.text("UPDATE segment_profiles SET segment_name = :n, name_rule = :rule, "
                                 "value_standing = :v, standing = :st WHERE as_of_date = :d AND segment_id = :s"),
                         params)
            if int(seg) in changed:
                conn.execute(sa.text("UPDATE segment_assignments SET segment_name = :n "
                                     "WHERE as_of_date = :d AND segment_id = :s"), params)
                conn.execute(sa.text("UPDATE customer_segments SET segment_name = :n "
                                     "WHERE as_of_date = :d AND segment_id = :s AND model_run_id = :m"), params)
    for seg, (was, now) in changed.items():
        log.warning("segment %d renamed after the CLV cross-check: '%s' -> '%s'", seg, was, now)
    return changed
