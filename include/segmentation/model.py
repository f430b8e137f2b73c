"""Behavioural segmentation: k-prototypes on RFM + engagement features and traits.

- Only features with data this run enter (:func:`available_features`): a
  feature every customer has the same value of (its source table absent or
  empty, or no variance) is left out and reported as not available.
- Numeric features are log1p-transformed where skewed and standardised;
  categorical traits (channel, plan, region) enter through k-prototypes'
  mismatch term (:mod:`include.kprototypes`). KMeans serves all-numeric sets.
- k is chosen over ``[k_min, k_max]`` by :func:`choose_k` (sampled silhouette
  with the model's mixed-type dissimilarity, small segments excluded); cost,
  Davies-Bouldin and Calinski-Harabasz are recorded for every candidate.
- :func:`bootstrap_stability` (Hennig's clusterboot) scores every segment.
- Names come from each segment's standing relative to the other segments
  (:mod:`include.segmentation.naming`), with the rule stored beside each name.
- Ids stay stable across runs by Hungarian matching on segment centroids
  (:func:`match_segment_ids`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.features.build import CATEGORICAL_FEATURES, NUMERIC_FEATURES

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


def available_features(features: pd.DataFrame, columns: tuple[str, ...] = NUMERIC_FEATURES,
                       ) -> tuple[tuple[str, ...], dict[str, str]]:
    """Split numeric features into those with data this run and those without.

    A feature is *not available* when every customer has the same value of it
    (typically 0 because its source table is absent or empty): it cannot
    separate anyone, and standardising it only draws a flat line.

    Returns
    -------
    available : the columns that vary, in ``columns`` order
    unavailable : ``{column: reason}`` for the others
    """
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ValueError(f"customer_features lacks column(s): {', '.join(missing)}")
    available, unavailable = [], {}
    for col in columns:
        values = features[col].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            unavailable[col] = "no values"
        elif finite.min() == finite.max():
            unavailable[col] = f"the same value ({finite[0]:g}) for every customer"
        else:
            available.append(col)
    return tuple(available), unavailable


def _columns(features: pd.DataFrame, columns: tuple[str, ...] | None) -> tuple[str, ...]:
    if columns is None:
        columns = available_features(features)[0]
    if not columns:
        raise ValueError("customer_features has no numeric feature that varies between customers")
    return tuple(columns)


@dataclass
class SegmentationResult:
    labels: np.ndarray  # 0..k-1, model order
    k: int
    model: object
    candidates: pd.DataFrame  # one row per k tried
    metrics: dict[str, float] = field(default_factory=dict)
    algorithm: str = "kprototypes"
    columns: tuple[str, ...] = NUMERIC_FEATURES  # numeric features the fit used


def categorical_matrix(features: pd.DataFrame, columns: tuple[str, ...] = CATEGORICAL_FEATURES) -> np.ndarray:
    """Integer codes of the categorical traits (sorted category order), encoded once for every fit."""
    from include.segmentation.kprototypes import encode_categories

    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ValueError(f"customer_features lacks categorical column(s): {', '.join(missing)}")
    codes, _ = encode_categories(features[list(columns)].fillna("unknown").astype(str).to_numpy(dtype=object))
    return codes


def mixed_distance_matrix(x_num: np.ndarray, codes: np.ndarray, gamma: float) -> np.ndarray:
    """Pairwise k-prototypes dissimilarity (squared Euclidean + gamma x mismatches)."""
    from include.segmentation.kprototypes import dissimilarity

    return dissimilarity(x_num, codes, x_num, codes, gamma)


def _fit_one(algorithm: str, x_num, x_cat, k: int, seed: int, n_init: int, gamma: float | None = None):
    if algorithm == "kmeans":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x_num)
        return model, model.labels_, float(model.inertia_)
    from include.segmentation.kprototypes import KPrototypes

    model = KPrototypes(k, gamma=gamma, n_init=n_init, random_state=seed).fit(x_num, x_cat)
    return model, model.labels_, float(model.cost_)


def evaluate_k(x_num, x_cat, k: int, *, algorithm: str, seed: int, n_init: int, sample_idx: np.ndarray,
               sample_distance: np.ndarray) -> tuple[object, np.ndarray, dict[str, float]]:
    """Fit with ``k`` clusters; return the model, labels and quality metrics.

    Silhouette uses the model's own dissimilarity on a fixed sample (mixed-type
    for k-prototypes); Davies-Bouldin and Calinski-Harabasz use the numeric
    part only, so they are secondary checks for mixed data.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    model, labels, cost = _fit_one(algorithm, x_num, x_cat, k, seed, n_init)
    sample_labels = labels[sample_idx]
    silhouette = (float(silhouette_score(sample_distance, sample_labels, metric="precomputed"))
                  if len(set(sample_labels)) > 1 else -1.0)
    metrics = {
        "k": float(k),
        "cost": cost,
        "silhouette": silhouette,
        "davies_bouldin": float(davies_bouldin_score(x_num, labels)) if len(set(labels)) > 1 else float("nan"),
        "calinski_harabasz": float(calinski_harabasz_score(x_num, labels)) if len(set(labels)) > 1 else float("nan"),
        "smallest_segment_share": float(np.bincount(labels, minlength=k).min() / len(labels)),
    }
    return model, labels, metrics


def choose_k(candidates: pd.DataFrame, min_share: float = 0.02, previous_k: int | None = None,
             tolerance: float = 0.02) -> int:
    """The documented k rule: the highest sampled silhouette among candidates whose
    smallest segment holds at least ``min_share`` of customers (a segment too small
    to act on is no segment); ties go to the smaller k. Falls back to all candidates.

    With ``previous_k`` (last published run's k), that k is kept while its
    silhouette is within ``tolerance`` of the best, so segments do not split and
    merge from week to week over noise-level differences.
    """
    eligible = candidates[candidates["smallest_segment_share"] >= min_share]
    pool = eligible if len(eligible) else candidates
    best = pool.sort_values(["silhouette", "k"], ascending=[False, True]).iloc[0]
    if previous_k is not None and previous_k in set(pool["k"].astype(int)):
        kept = pool[pool["k"] == previous_k].iloc[0]
        if kept["silhouette"] >= best["silhouette"] - tolerance:
            return int(previous_k)
    return int(best["k"])


def fit_segments(
    features: pd.DataFrame, *, k_min: int = 3, k_max: int = 8, k: int | None = None,
    seed: int = 42, silhouette_sample: int = 5000, algorithm: str = "kprototypes", n_init: int = 4,
    previous_k: int | None = None, columns: tuple[str, ...] | None = None,
) -> SegmentationResult:
    """Choose k (unless given) and fit the segmentation.

    ``algorithm`` is ``"kprototypes"`` (numeric + categorical traits) or
    ``"kmeans"`` (numeric only); k-prototypes falls back to KMeans when no
    categorical trait varies. ``columns`` are the numeric features used
    (default: :func:`available_features`).
    """
    columns = _columns(features, columns)
    x_num = numeric_matrix(features, columns)
    x_cat = categorical_matrix(features)
    n = len(x_num)
    if n < 3:
        raise ValueError(f"segmentation needs at least 3 customers, got {n}")
    if algorithm not in ("kprototypes", "kmeans"):
        raise ValueError(f"algorithm must be 'kprototypes' or 'kmeans', got {algorithm!r}")
    if algorithm == "kprototypes" and all(col.max(initial=0) == 0 for col in x_cat.T):
        log.info("no categorical trait varies: using KMeans on the numeric features")
        algorithm = "kmeans"
    rng = np.random.default_rng(seed)
    sample_idx = np.sort(rng.choice(n, size=min(silhouette_sample, n), replace=False))
    if algorithm == "kprototypes":
        gamma = 0.5 * float(np.mean(x_num.std(axis=0)))
        sample_distance = mixed_distance_matrix(x_num[sample_idx], x_cat[sample_idx], gamma)
    else:
        from sklearn.metrics import pairwise_distances

        sample_distance = pairwise_distances(x_num[sample_idx])
    np.fill_diagonal(sample_distance, 0.0)
    ks = [k] if k else list(range(k_min, min(k_max, n - 1) + 1))
    fits, rows = {}, []
    for kk in ks:
        model, labels, metrics = evaluate_k(x_num, x_cat, kk, algorithm=algorithm, seed=seed, n_init=n_init,
                                            sample_idx=sample_idx, sample_distance=sample_distance)
        fits[kk] = (model, labels)
        rows.append(metrics)
        log.info("k=%d cost=%.1f silhouette=%.3f davies_bouldin=%.3f smallest=%.1f%%", kk, metrics["cost"],
                 metrics["silhouette"], metrics["davies_bouldin"], 100 * metrics["smallest_segment_share"])
    candidates = pd.DataFrame(rows)
    best_k = choose_k(candidates, previous_k=previous_k)
    model, labels = fits[best_k]
    chosen = candidates[candidates["k"] == best_k].iloc[0].to_dict()
    return SegmentationResult(np.asarray(labels), best_k, model, candidates,
                              {f"chosen_{m}": float(v) for m, v in chosen.items()}, algorithm, columns)


def bootstrap_stability(
    features: pd.DataFrame, labels: np.ndarray, k: int, *, algorithm: str = "kprototypes",
    n_boot: int = 30, seed: int = 42, n_init: int = 2, columns: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, float]:
    """Hennig's clusterboot: per-cluster mean Jaccard over ``n_boot`` bootstrap refits, and mean ARI.

    Each resample (drawn with replacement) is refitted with the same k. For
    every original cluster, the Jaccard similarity with the most similar
    bootstrap cluster is computed on the distinct resampled points, then
    averaged over resamples (>= 0.75 stable, >= 0.85 highly stable, < 0.5
    dissolved; Hennig 2007). The adjusted Rand index compares the full
    solution with the refit's assignment of every customer.

    Returns
    -------
    jaccard : (k,) mean Jaccard per cluster (model label order)
    mean_ari : float
    """
    from sklearn.metrics import adjusted_rand_score

    x_num = numeric_matrix(features, _columns(features, columns))
    x_cat = categorical_matrix(features)
    n = len(x_num)
    rng = np.random.default_rng(seed)
    jaccard = np.zeros((n_boot, k))
    aris = np.zeros(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        model, _, _ = _fit_one(algorithm, x_num[idx], x_cat[idx], k, seed + b + 1, n_init)
        pred = model.predict(x_num, x_cat) if algorithm == "kprototypes" else model.predict(x_num)
        aris[b] = adjusted_rand_score(labels, pred)
        uniq = np.unique(idx)
        orig, boot = labels[uniq], pred[uniq]
        overlap = np.zeros((k, k))
        np.add.at(overlap, (orig, boot), 1)
        sizes_o = overlap.sum(axis=1)[:, None]
        sizes_b = overlap.sum(axis=0)[None, :]
        union = sizes_o + sizes_b - overlap
        with np.errstate(invalid="ignore", divide="ignore"):
            jac = np.where(union > 0, overlap / union, 0.0)
        jaccard[b] = jac.max(axis=1)
    return jaccard.mean(axis=0), float(aris.mean())


def order_by_value(features: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 1..k by decreasing mean 365-day net revenue (1 = most valuable)."""
    order = pd.Series(features["monetary"].to_numpy()).groupby(labels).mean().sort_values(ascending=False)
    remap = {old: new for new, old in enumerate(order.index, start=1)}
    return np.array([remap[v] for v in labels])


def z_profiles(features: pd.DataFrame, labels: np.ndarray, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Segment means of the standardised (log) numeric features: the segments' centroids.

    ``columns`` default to the features available this run (:func:`available_features`).
    """
    columns = _columns(features, columns)
    return pd.DataFrame(numeric_matrix(features, columns), columns=list(columns)).groupby(labels).mean()


def match_segment_ids(current: pd.DataFrame, previous: pd.DataFrame | None, *,
                      max_distance: float = 1.5, next_id: int | None = None) -> tuple[dict[int, int], dict[int, float]]:
    """Map this run's segments to the previous run's ids by Hungarian assignment.

    ``current`` and ``previous`` are z-profiles (index: segment id, columns:
    features). Pairs farther apart than ``max_distance`` (Euclidean in z
    units) are not matched; unmatched segments get new ids from ``next_id``
    (default: above every id the previous run used), so a retired id is never reused. Returns ``{current id: stable id}`` and the matched distances.
    """
    from scipy.optimize import linear_sum_assignment

    if previous is None or previous.empty:
        return {int(s): int(s) for s in current.index}, {}
    cols = [c for c in current.columns if c in previous.columns]
    cost = np.sqrt(((current[cols].to_numpy()[:, None, :] - previous[cols].to_numpy()[None, :, :]) ** 2).sum(axis=2))
    rows, cols_idx = linear_sum_assignment(cost)
    mapping, distance = {}, {}
    for r, c in zip(rows, cols_idx, strict=True):
        if cost[r, c] <= max_distance:
            mapping[int(current.index[r])] = int(previous.index[c])
            distance[int(current.index[r])] = float(cost[r, c])
    next_id = max(next_id or 0, int(previous.index.max()) + 1)
    for seg in current.index:
        if int(seg) not in mapping:
            mapping[int(seg)] = next_id
            next_id += 1
    return mapping, distance


def segment_profiles(features: pd.DataFrame, labels: np.ndarray, as_of_date: dt.date,
                     columns: tuple[str, ...] | None = None, clv: pd.Series | None = None) -> pd.DataFrame:
    """Per-segment size, share, feature means (original units), names, naming rules and standings.

    Names come from :func:`include.segmentation.naming.name_segments` on the
    features available this run (``columns``); ``clv`` (mean CLV by segment)
    is used where the CLV stage has already scored the date.
    """
    from include.segmentation.naming import name_segments, segment_stats

    columns = _columns(features, columns)
    names = name_segments(segment_stats(features, labels, columns), clv=clv)
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
