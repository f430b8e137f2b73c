"""DAG task ``segment_customers``: fit the date's segments and check their stability (fit-local; the labeller names them)."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.errors import NoRowsError
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def segment_customers(run: RunInfo) -> dict[str, Any]:
    """Fit segments on the date's features and check their bootstrap stability; write the fit, fit-local only.

    The fit depends only on this date's features and the seed. Segments are numbered
    model-locally (``fit_segment``: 1 = highest mean 12-month revenue); the fit tables are
    immutable once written. Names, stable ids and the final quality gate are the labeller's
    (task ``label_segments``, :mod:`include.labels`); this task records the stability half of
    the gate (``segmentation_runs.gate_passed``: every fit segment's bootstrap Jaccard reaches
    ``min_jaccard``).

    Features with no data this run (the same value for every customer, e.g.
    no support or email table) are left out of the fit and recorded as not
    available in ``segmentation_runs.features_unavailable`` and MLflow.
    Writes the model's assignments, profiles, centroids and run row; every candidate k is a nested
    MLflow run, so the MLflow UI compares them side by side.
    """
    import json

    import pandas as pd

    from include.features.build import load_features
    from include.runtime import tracking
    from include.segmentation.history import archetype_ari, planted_archetypes
    from include.segmentation.model import (
        available_features,
        fit_segments,
        order_by_value,
        segment_profiles,
        segmentation_features,
        stability,
        stability_gate,
        z_profiles,
    )

    s = run.settings
    d = {"as_of_date": run.as_of_date}
    # The warehouse reads first: the MLflow run (RunInfo.prefetch_mlflow_run, in the DAG's task wrapper)
    # is found beside them; asking for it before them waited for MLflow's import and store (4-5 CPU-s).
    with Warehouse(run.warehouse_url) as wh:
        features = load_features(wh, run.as_of_date)
        if features.empty:
            raise NoRowsError(f"customer_features has no rows for as_of_date={run.as_of_date}")
        truth = planted_archetypes(wh, run.as_of_date)
    mlflow_run = run.mlflow_run()
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
                          numeric_columns=fit_columns, min_jaccard=s.min_jaccard, stability_boot=s.n_bootstrap)
    for row in result.candidates.to_dict("records"):
        child = tracking.child_run(mlflow_run, f"k={int(row['k'])}", {"as_of_date": run.as_of_date.isoformat()})
        tracking.log_params(child, {"k": int(row["k"]), "algorithm": result.algorithm, "seed": s.seed,
                                    "n_init": s.n_init})
        tracking.log_metrics(child, {m: v for m, v in row.items() if m != "k"})
        tracking.finish_run(child)

    # Spectral k screening already ran the clusterboot of the chosen k: its numbers are reused.
    jaccard_by_model, bootstrap_ari = stability(features, result, n_boot=s.n_bootstrap, seed=s.seed)
    local = order_by_value(features, result.labels)  # fit_segment: 1 = highest mean 12-month revenue
    jaccard = pd.Series(jaccard_by_model[result.labels]).groupby(local).first()
    profiles = segment_profiles(features, local, run.as_of_date)
    profiles["jaccard"] = profiles["fit_segment"].map(jaccard)
    profiles["model_run_id"] = mlflow_run
    gate_reason = stability_gate(profiles, s.min_jaccard)
    archetype_ari = archetype_ari(features, local, truth)
    assignments = pd.DataFrame({"as_of_date": run.as_of_date, "customer_key": features["customer_key"],
                                "fit_segment": local.astype("int64"), "model_run_id": mlflow_run})
    centroids = z_profiles(features, local, columns).stack().rename("z_value").reset_index()
    centroids.columns = ["fit_segment", "feature", "z_value"]
    centroids.insert(0, "as_of_date", run.as_of_date)
    summary_row = pd.DataFrame([{
        "as_of_date": run.as_of_date, "model_run_id": mlflow_run, "algorithm": result.algorithm, "k": result.k,
        "silhouette": result.metrics["chosen_silhouette"], "davies_bouldin": result.metrics["chosen_davies_bouldin"],
        "customers": len(assignments), "published": False, "min_jaccard": float(profiles["jaccard"].min()),
        "bootstrap_ari": bootstrap_ari, "gate_passed": gate_reason is None, "gate_reason": gate_reason,
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
               "stability_gate_passed": float(gate_reason is None), "features_not_available": float(len(unavailable))}
    if archetype_ari is not None:
        metrics["archetype_ari"] = archetype_ari
    for r in profiles.itertuples():
        metrics[f"jaccard.fit_segment_{r.fit_segment}"] = r.jaccard
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_params(mlflow_run, {"chosen_k": result.k, "algorithm_used": result.algorithm,
                                     "features_used": ",".join(columns),
                                     "features_not_available": ",".join(unavailable) or "none"})

    for row in result.candidates.to_dict("records"):
        tracking.log_metrics(mlflow_run, {f"{m}_by_k": v for m, v in row.items() if m != "k"}, step=int(row["k"]))
    tracking.log_table(mlflow_run, result.candidates, "segmentation/k_candidates.csv")
    tracking.log_table(mlflow_run, profiles, "segmentation/segment_profiles.csv")
    for r in profiles.itertuples():
        log.info("fit segment %d %7d customers  jaccard=%.2f  12-month revenue per customer %.2f", r.fit_segment,
                 r.customers, r.jaccard, r.monetary)
    if gate_reason:
        log.warning("stability gate failed, labels will not be published: %s", gate_reason)
    log.info("segmentation: %s k=%d silhouette=%.3f bootstrap ARI=%.3f archetype ARI=%s", result.algorithm,
             result.k, result.metrics["chosen_silhouette"], bootstrap_ari,
             "n/a" if archetype_ari is None else f"{archetype_ari:.3f}")
    return {"k": result.k, "customers": len(assignments), "stability_gate_passed": gate_reason is None,
            "fit_segments": profiles[["fit_segment", "customers"]].to_dict("records")}
