"""Baseline segmentation: KMeans on log-transformed, standardised numeric features.

k is chosen over ``[k_min, k_max]`` by the highest silhouette score computed on
a fixed-size sample (seeded), with Davies-Bouldin, Calinski-Harabasz and
inertia recorded beside it for every candidate. Segment ids are ordered by
mean 365-day net revenue (1 = highest), and every segment gets a deterministic
name from its profile relative to the population (:func:`name_segments`),
with the rule that produced the name stored beside it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.features import NUMERIC_FEATURES

log = logging.getLogger(__name__)

#: Features with long right tails, log1p-transformed before scaling.
SKEWED_FEATURES: tuple[str, ...] = (
    "recency_days", "frequency", "monetary", "avg_order_value", "tenure_days",
    "support_contacts", "cost_to_serve", "usage_sessions",
)


def numeric_matrix(features: pd.DataFrame, columns: tuple[str, ...] = NUMERIC_FEATURES) -> np.ndarray:
    """log1p the skewed columns, then standardise every column (zero-variance columns become 0).

    Raises
    ------
    ValueError
        A column is missing, or holds NaN or negative values where log1p needs them non-negative.
    """
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ValueError(f"customer_features lacks column(s): {', '.join(missing)}")
    x = features[list(columns)].to_numpy(dtype=float, copy=True)
    if np.isnan(x).any():
        bad = [c for c, n in zip(columns, np.isnan(x).sum(axis=0), strict=True) if n]
        raise ValueError(f"customer_features has NaN in column(s): {', '.join(bad)}")
    for j, col in enumerate(columns):
        if col in SKEWED_FEATURES:
            if (x[:, j] < 0).any():
                raise ValueError(f"customer_features.{col} has negative values; cannot log-transform")
            x[:, j] = np.log1p(x[:, j])
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std


@dataclass
class SegmentationResult:
    labels: np.ndarray  # segment ids, 1..k
    k: int
    model: object
    candidates: pd.DataFrame  # one row per k tried
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate_k(x: np.ndarray, k: int, seed: int, sample: int) -> tuple[object, dict[str, float]]:
    """Fit KMeans with ``k`` clusters; return the model and its quality metrics."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    labels = model.labels_
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    metrics = {
        "k": float(k),
        "inertia": float(model.inertia_),
        "silhouette": float(silhouette_score(x[idx], labels[idx])) if len(set(labels[idx])) > 1 else -1.0,
        "davies_bouldin": float(davies_bouldin_score(x, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
    }
    return model, metrics


def fit_segments(
    features: pd.DataFrame, *, k_min: int = 3, k_max: int = 8, k: int | None = None,
    seed: int = 42, silhouette_sample: int = 5000,
) -> SegmentationResult:
    """Fit the baseline KMeans; choose k by the best sampled silhouette unless ``k`` is given."""
    x = numeric_matrix(features)
    n = len(x)
    if n < 3:
        raise ValueError(f"segmentation needs at least 3 customers, got {n}")
    ks = [k] if k else list(range(k_min, min(k_max, n - 1) + 1))
    fits, rows = {}, []
    for kk in ks:
        model, metrics = evaluate_k(x, kk, seed, silhouette_sample)
        fits[kk] = model
        rows.append(metrics)
        log.info("k=%d silhouette=%.3f davies_bouldin=%.3f inertia=%.1f",
                 kk, metrics["silhouette"], metrics["davies_bouldin"], metrics["inertia"])
    candidates = pd.DataFrame(rows)
    best_k = int(candidates.sort_values(["silhouette", "k"], ascending=[False, True]).iloc[0]["k"])
    model = fits[best_k]
    raw = model.labels_
    # Order segment ids by mean 365-day revenue so id 1 is the most valuable.
    order = pd.Series(features["monetary"].to_numpy()).groupby(raw).mean().sort_values(ascending=False)
    remap = {old: new for new, old in enumerate(order.index, start=1)}
    labels = np.array([remap[v] for v in raw])
    chosen = candidates[candidates["k"] == best_k].iloc[0].to_dict()
    return SegmentationResult(labels, best_k, model, candidates, {f"chosen_{m}": float(v) for m, v in chosen.items()})


#: Naming rules, tried in order; each is (name, [(feature, op, threshold), ...]) on
#: segment-mean z-scores (standardised log features, population mean 0, sd 1).
NAMING_RULES: tuple[tuple[str, tuple[tuple[str, str, float], ...]], ...] = (
    ("High-value core", (("monetary", ">", 1.0), ("frequency", ">", 0.8), ("recency_days", "<", 0.0))),
    ("Big spenders", (("avg_order_value", ">", 0.8), ("frequency", "<", 0.5))),
    ("Discount-driven", (("discount_share", ">", 0.8),)),
    ("Loyal potential", (("frequency", ">", 0.3), ("recency_days", "<", 0.0))),
    ("Costly tail", (("cost_to_serve", ">", 0.3), ("monetary", "<", 0.0))),
    ("At risk", (("recency_days", ">", 0.5), ("avg_order_value", ">", -0.3), ("tenure_days", ">", -0.5))),
    ("Hibernating", (("recency_days", ">", 0.5),)),
)
FALLBACK_NAME = "Occasional"


def name_segments(z_profiles: pd.DataFrame) -> pd.DataFrame:
    """Name segments from their mean z-scores; return ``segment_name`` and ``name_rule`` by segment id.

    Rules are tried in :data:`NAMING_RULES` order; the first whose every condition
    holds names the segment. When two segments earn the same name, the one with
    the higher mean monetary z keeps it and the other gets a numbered suffix.
    """
    rows = []
    for seg, z in z_profiles.iterrows():
        name, rule = FALLBACK_NAME, "no rule matched"
        for candidate, conditions in NAMING_RULES:
            ok = all((z[f] > t) if op == ">" else (z[f] < t) for f, op, t in conditions)
            if ok:
                name = candidate
                rule = " and ".join(f"{f} z={z[f]:+.2f} {op} {t:+.1f}" for f, op, t in conditions)
                break
        rows.append({"segment_id": seg, "segment_name": name, "name_rule": rule, "_m": z["monetary"]})
    named = pd.DataFrame(rows).sort_values(["segment_name", "_m"], ascending=[True, False])
    rank = named.groupby("segment_name").cumcount()
    named.loc[rank > 0, "segment_name"] = named["segment_name"] + " " + (rank + 1).astype(str)
    return named.drop(columns="_m").set_index("segment_id").sort_index()


def segment_profiles(features: pd.DataFrame, labels: np.ndarray, as_of_date: dt.date) -> pd.DataFrame:
    """Per-segment size, share, feature means (original units), names and naming rules."""
    x = numeric_matrix(features)
    z = pd.DataFrame(x, columns=NUMERIC_FEATURES).groupby(labels).mean()
    names = name_segments(z)
    means = features[list(NUMERIC_FEATURES)].groupby(labels).mean()
    sizes = pd.Series(labels).value_counts().sort_index()
    out = means.copy()
    out.insert(0, "customer_share", sizes / sizes.sum())
    out.insert(0, "customers", sizes)
    out = names.join(out)
    out.index.name = "segment_id"
    out = out.reset_index()
    out.insert(0, "as_of_date", as_of_date)
    return out
