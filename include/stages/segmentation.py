"""DAG task ``segment_customers``: fit, check and name the segments of the date."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.errors import NoRowsError
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def segment_customers(run: RunInfo) -> dict[str, Any]:
    """Fit segments on the date's features, check their stability, name them, keep ids stable.

    The fit depends only on this date's features and the seed. Segments are
    numbered and named model-locally (1 = most valuable), then given stable
    ids by the fold over the earlier fitted dates
    (:func:`include.segmentation.history.align_new_fit`); names travel with
    the ids. Later dates are re-aligned when this date is published.

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
    from include.segmentation.history import align_new_fit, archetype_ari, planted_archetypes
    from include.segmentation.model import (
        available_features,
        bootstrap_stability,
        fit_segments,
        order_by_value,
        segment_profiles,
        segmentation_features,
        z_profiles,
    )

    mlflow_run = run.mlflow_run()
    s = run.settings
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        features = load_features(wh, run.as_of_date)
        if features.empty:
            raise NoRowsError(f"customer_features has no rows for as_of_date={run.as_of_date}")
        truth = planted_archetypes(wh, run.as_of_date)
    columns, unavailable = available_features(features)
    # The clustering's rates while active are derived from the same sources, so a source with no data
    # leaves them out too; features_unavailable (report, MLflow) keeps naming the table's features.
    fit_columns, fit_unavailable = segmentation_features(features)
    if fit_unavailable:
        log.info("rates while active left out of the clustering (no data): %s", ", ".join(fit_unavailable))
    for feature, reason in unavailable.items():
        log.warning("feature %s not available this run (%s): left out of clustering, plots and tables",
                    feature, reason)
    tracking.log_dataset(mlflow_run, features.drop(columns=["as_of_date"]),
                         name=f"customer_features@{run.as_of_date.isoformat()}",
                         context="segmentation", table="customer_features", as_of_date=run.as_of_date)
    result = fit_segments(features, k_min=s.k_min, k_max=s.k_max, k=s.k, seed=s.seed,
                          silhouette_sample=s.silhouette_sample, algorithm=s.algorithm, n_init=s.n_init,
                          numeric_columns=fit_columns, min_jaccard=s.min_jaccard)
    for row in result.candidates.to_dict("records"):
        child = tracking.child_run(mlflow_run, f"k={int(row['k'])}", {"as_of_date": run.as_of_date.isoformat()})
        tracking.log_params(child, {"k": int(row["k"]), "algorithm": result.algorithm, "seed": s.seed,
                                    "n_init": s.n_init})
        tracking.log_metrics(child, {m: v for m, v in row.items() if m != "k"})
        tracking.finish_run(child)

    jaccard_by_model, bootstrap_ari = bootstrap_stability(
        features, result.labels, result.k, algorithm=result.algorithm, n_boot=s.n_bootstrap, seed=s.seed,
        numeric_columns=result.numeric_columns, categorical_columns=result.categorical_columns)
    local = order_by_value(features, result.labels)
    with Warehouse(run.warehouse_url) as wh:
        aligned = align_new_fit(wh, run.as_of_date, z_profiles(features, local, columns), s.max_match_distance)
    mapping, distance = aligned.stable, {aligned.stable[loc]: v for loc, v in aligned.distance.items()}
    labels = np.array([mapping[v] for v in local])
    jaccard = pd.Series(jaccard_by_model[result.labels]).groupby(labels).first()
    # CLV is fitted beside this task; crosscheck_clv checks the value names against it before publishing
    # (reading it here would make names depend on which task finished first). Names are given to the
    # model-local segments, so they do not depend on the ids the fold hands out.
    profiles = segment_profiles(features, local, run.as_of_date, columns)
    profiles["segment_id"] = profiles["segment_id"].map(mapping).astype("int64")
    profiles = profiles.sort_values("segment_id", ignore_index=True)
    profiles["jaccard"] = profiles["segment_id"].map(jaccard)
    profiles["match_distance"] = profiles["segment_id"].map(distance)
    profiles["model_run_id"] = mlflow_run
    failed = profiles[profiles["jaccard"] < s.min_jaccard]
    gate_reason = "; ".join(
        f"segment {r.segment_id} '{r.segment_name}' bootstrap Jaccard {r.jaccard:.2f} < min_jaccard {s.min_jaccard}"
        for r in failed.itertuples())
    archetype_ari = archetype_ari(features, labels, truth)
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
    with Warehouse(run.warehouse_url) as wh, wh.begin() as conn:
        # One transaction: the date's four tables become visible together.
        wh.replace_partition("segment_assignments", assignments, d, conn=conn)
        wh.replace_partition("segment_profiles", profiles, d, conn=conn)
        wh.replace_partition("segment_centroids", centroids, d, conn=conn)
        wh.replace_partition("segmentation_runs", summary_row, d, conn=conn)

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
