"""Behavioural segmentation: spectral segments (or k-prototypes, KMeans) on grouped, weighted features.

- The default features (:data:`DEFAULT_SEGMENTATION_FEATURES`, :func:`segmentation_features`)
  describe how a customer buys *while active* (rates per order or per active month, shares,
  basket size), plus tenure and recency; whether they still buy is shown beside the segments
  by the RFM map and CLV's P(alive).
- Only features with data this run enter (:func:`available_features`): a
  feature every customer has the same value of (its source table absent or
  empty, or no variance) is left out and reported as not available.
- Numeric features are log1p-transformed where skewed and standardised
  (:func:`numeric_matrix`); a derived ``order_rate`` (orders per year between a
  customer's first and last order) measures how often a customer buys while
  active, apart from whether they are still active (:func:`add_derived_features`).
- Features that measure the same behaviour form a group (:data:`FEATURE_GROUPS`:
  support contacts and their cost, email opens and clicks, orders and revenue);
  each group is divided by its first singular value, as multiple factor
  analysis weighs variable groups (Escofier & Pages), so a redundant pair
  counts once and no behaviour dominates by being measured twice
  (:func:`design_matrix`). Features absent from a run are simply not passed.
- ``algorithm="spectral"`` (the stage's default): spectral clustering of a
  sample's neighbour graph, everyone assigned by the vote of their nearest
  sampled customers (:mod:`include.segmentation.spectral`); numeric features only.
  Categorical traits (channel, plan, region) enter through k-prototypes'
  mismatch term (:mod:`include.segmentation.kprototypes`). KMeans serves all-numeric sets.
- k is chosen over ``[k_min, k_max]`` by :func:`choose_k` among candidates whose
  every segment a clusterboot on a subsample finds stable: spectral screens every
  k and takes the largest stable one (as prediction strength does); k-prototypes
  and KMeans screen the best few by silhouette and take the best-silhouette stable one.
- :func:`prepare` and :func:`assign` score new customers as the fitted ones were.
- :func:`bootstrap_stability` (Hennig's clusterboot) scores every segment.
- A fit is immutable and speaks of fit-local segments (1 = highest mean 12-month revenue,
  :func:`order_by_value`); names (:mod:`include.segmentation.naming`) and stable ids (Hungarian
  matching on centroids, :func:`match_segment_ids`) are given by the labeller (:mod:`include.labels`).

Size: the design matrix, k selection, the clusterboot and id matching share the matrices
and the fitting helper; naming already lives in :mod:`include.segmentation.naming`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.features.build import ACTIVE_FEATURES, CATEGORICAL_FEATURES, NUMERIC_FEATURES
from include.runtime.errors import ModelInputError

log = logging.getLogger(__name__)

#: Features with long right tails, log1p-transformed before scaling.
SKEWED_FEATURES: tuple[str, ...] = (
    "recency_days", "frequency", "monetary", "avg_order_value", "tenure_days",
    "support_contacts", "cost_to_serve", "usage_sessions", "order_rate", "support_per_order", "purchase_days",
)

#: Derived numeric feature: lifetime orders per year between the first and the last order.
ORDER_RATE = "order_rate"
#: Columns ``order_rate`` is derived from (every ``customer_features`` table has them).
ORDER_RATE_SOURCES: tuple[str, ...] = ("orders_lifetime", "tenure_days", "recency_days")
#: A quarter of a year added to every customer's active span, so a repeat buyer whose purchases lie
#: close together gets a finite rate instead of dividing by a near-zero span. A one-time buyer has no
#: rate at all: one purchase says nothing about how often they buy (it once gave them 4 orders a year),
#: so ``order_rate`` is undefined for them (:data:`UNDEFINED_RATES`, marker ``repeat_buyer``).
ORDER_RATE_PRIOR_YEARS = 0.25
#: 1 for a customer who bought on two or more days, else 0 (``features.sql``): the marker of an undefined
#: ``order_rate``.
REPEAT_BUYER = "repeat_buyer"
#: Days with a purchase over the customer's lifetime (``features.sql``): whether a customer ever bought
#: again is a fact the clustering sees (one-time buyers sit at its minimum, 1), not one it must infer
#: from a filled rate. Log-scaled and weighed with ``order_rate`` as one behaviour (:data:`FEATURE_GROUPS`).
#: Why not the 0/1 ``repeat_buyer`` itself: a binary column cuts the neighbour graph in two blocks, so
#: the one-time buyers of every kind formed segments of their own (ARI against the demo's planted
#: archetypes 0.67 with it, 0.83 with ``purchase_days``, 0.83 with neither, at k = 6 on its last week).
PURCHASE_DAYS = "purchase_days"

#: Numeric features that measure one behaviour; each group weighs as much as one feature
#: (see :func:`design_matrix`). A feature in no group is a group of its own.
#: ``activity``: every feature that says whether a customer is engaged *now* (last order, orders,
#: revenue, sessions and email engagement in the recent window; pairwise correlations 0.5-0.9
#: on the demo) counts as one behaviour, so a lapsed customer is not "different" six times over.
#: ``promotion``, ``service``, ``email``: the rates while active that describe one habit each
#: (discount use and depth, returns; support per order and its cost; opens and clicks per open).
#: Sessions per active month stay a group of their own: apart from email they raised ARI on the
#: demo, seed 23 and no-discount frames at the true k (+0.01 to +0.02) and the core's recall.
#: ``buying``: how much a customer buys, as a rate while active and as lifetime purchase days.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "activity": ("recency_days", "frequency", "monetary", "usage_sessions", "email_open_rate", "email_click_rate"),
    "promotion": ("discount_share", "discount_depth", "return_rate"),
    "service": ("support_contacts", "cost_to_serve", "support_per_order", "cost_per_contact"),
    "email": ("email_open_rate_active", "email_click_per_open"),
    "buying": (ORDER_RATE, PURCHASE_DAYS),
}
#: Mean bootstrap Jaccard from which Hennig (2007) calls a cluster stable; the k screening's least.
STABLE_JACCARD = 0.75
#: Customers the spectral clusterboot is run on at most (:func:`bootstrap_stability`).
SPECTRAL_BOOTSTRAP_ROWS = 20_000
#: Algorithms :func:`fit_segments` accepts.
ALGORITHMS: tuple[str, ...] = ("kprototypes", "kmeans", "spectral")
#: Mean bootstrap Jaccard from which Hennig (2007) calls a cluster highly stable; spectral k selection
#: takes the largest k whose every segment reaches it (then the largest merely stable k).
HIGHLY_STABLE_JACCARD = 0.85
#: Share of the screening resamples in which every segment of a candidate k must be highly stable
#: for spectral k selection (:func:`choose_k`): 9 refits in 10.
HIGHLY_STABLE_SHARE = 0.9
#: Numeric columns used by default: who a customer *is*, how they buy while active (rates per
#: order or per active month, shares, basket size, buying rate while active), plus tenure and
#: recency. The 365-day and 90-day totals (frequency, monetary, sessions, email rates, support)
#: are left out: they mostly say whether a customer is active now, which the RFM map and CLV's
#: P(alive) show beside the segments, and they put every customer who has gone quiet in one
#: "lapsed" segment whatever their habits were.
DEFAULT_SEGMENTATION_FEATURES: tuple[str, ...] = (
    "recency_days", "tenure_days", "avg_order_value", ORDER_RATE, PURCHASE_DAYS, "discount_share", "discount_depth",
    "return_rate", "support_per_order", "cost_per_contact", "sessions_per_active_month",
    "email_open_rate_active", "email_click_per_open",
)
#: Rates with no denominator for some customers, and the column that is 0 exactly for them: discount
#: depth without a discounted order, cost per contact without a contact. ``features.sql`` stores 0
#: there, but the rate is unknown, not zero: as 0 it puts every such customer at one point, a dense
#: block the neighbour graph reads as a group (one-time and contact-free customers, split off from
#: their kind; on the sweep's no-discount variant that split cost 0.15 ARI). The segmentation
#: design gives them the mean of the customers who have the rate (:func:`fill_undefined_rates`),
#: so the column adds no distance where it says nothing.
UNDEFINED_RATES: dict[str, str] = {"discount_depth": "discount_share", "cost_per_contact": "support_per_order",
                                   ORDER_RATE: REPEAT_BUYER}
#: Rates ``features.sql`` stores as NULL where they have no denominator (no email sends or opens for the
#: customer): unknown, filled like :data:`UNDEFINED_RATES` (the mean of the customers who have the rate)
#: wherever a matrix is built, so a customer without email data is not "never opens" (as 0, the core's
#: customers without email data leaked to the regulars).
NULLABLE_RATES: tuple[str, ...] = ("email_open_rate", "email_click_rate", "email_open_rate_active",
                                   "email_click_per_open")
#: The default before the rates while active (feature tables without them, e.g. built by an older
#: ``features.sql`` or by hand): the table's numeric features and ``order_rate``.
LEGACY_SEGMENTATION_FEATURES: tuple[str, ...] = (*NUMERIC_FEATURES, ORDER_RATE)


def segmentation_features(features: pd.DataFrame) -> tuple[tuple[str, ...], dict[str, str]]:
    """The default numeric columns with data this run, and ``{column: reason}`` for the others.

    :data:`DEFAULT_SEGMENTATION_FEATURES` when the table has the rates while active
    (:data:`~include.features.build.ACTIVE_FEATURES`), else :data:`LEGACY_SEGMENTATION_FEATURES`;
    ``purchase_days`` only when the table has it; a column with the same value for every customer
    is left out (:func:`available_features`).
    """
    wanted = (DEFAULT_SEGMENTATION_FEATURES if all(c in features.columns for c in ACTIVE_FEATURES)
              else LEGACY_SEGMENTATION_FEATURES)
    # A table built before the lifecycle columns (or by hand) has no purchase_days: fitted without it.
    wanted = tuple(c for c in wanted if c != PURCHASE_DAYS or c in features.columns)
    return available_features(add_derived_features(features, wanted), wanted)

def numeric_matrix(features: pd.DataFrame, columns: tuple[str, ...] = NUMERIC_FEATURES) -> np.ndarray:
    """log1p the skewed columns, then standardise every column (zero-variance columns become 0).

    Rates without a denominator (:data:`UNDEFINED_RATES`, :data:`NULLABLE_RATES`) are filled
    with the mean of the customers who have them first.

    Raises
    ------
    ValueError
        A column is missing, or holds NaN or negative values where log1p needs them non-negative.
    """
    x = _logged(fill_undefined_rates(features, columns)[0], columns)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std


def add_derived_features(features: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``features`` with the derived columns among ``columns`` added (a copy when any is added).

    ``order_rate`` = ``orders_lifetime`` / (years from the first to the last order +
    :data:`ORDER_RATE_PRIOR_YEARS`): how often a customer buys while active. Frequency in the
    last 365 days mixes that rate with whether the customer is still active; recency
    carries the second part, so the pair separates "buys rarely" from "stopped buying".

    Raises
    ------
    ValueError
        ``order_rate`` is asked for but a column it is derived from is missing.
    """
    if ORDER_RATE not in columns or ORDER_RATE in features.columns:
        return features
    missing = [c for c in ORDER_RATE_SOURCES if c not in features.columns]
    if missing:
        raise ModelInputError(f"customer_features lacks column(s) {', '.join(missing)} needed to derive {ORDER_RATE}")
    out = features.copy()
    span_days = np.maximum(out["tenure_days"].to_numpy(float) - out["recency_days"].to_numpy(float), 0.0)
    out[ORDER_RATE] = out["orders_lifetime"].to_numpy(float) / (span_days / 365.25 + ORDER_RATE_PRIOR_YEARS)
    return out


def undefined_mask(features: pd.DataFrame, col: str) -> np.ndarray:
    """Where ``col`` has no denominator: its marker is 0 (:data:`UNDEFINED_RATES`), or it is NULL (:data:`NULLABLE_RATES`)."""
    undefined = np.isnan(features[col].to_numpy(float)) if col in NULLABLE_RATES else np.zeros(len(features), bool)
    if col in UNDEFINED_RATES:
        undefined |= features[UNDEFINED_RATES[col]].to_numpy(float) == 0
    return undefined


def fill_undefined_rates(features: pd.DataFrame, columns: tuple[str, ...],
                         fill: dict[str, float] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """``features`` with each rate among ``columns`` filled where it has no denominator.

    The rates are :data:`UNDEFINED_RATES` (undefined where their marker column is 0) and
    :data:`NULLABLE_RATES` (undefined where NULL). ``fill`` gives the value per column (a fitted
    design's); by default it is the mean over the customers who have the rate (0 when nobody has
    it). Without ``fill``, a marker rate whose marker column is absent is left as it is (and gets
    no fill value, so scoring leaves it too). Returns the frame (a copy when anything is filled)
    and the values used.

    Raises
    ------
    ValueError
        ``fill`` has a value for a column whose marker column is missing from ``features``.
    """
    if fill is not None:
        missing = [UNDEFINED_RATES[c] for c in columns if c in fill and c in UNDEFINED_RATES
                   and UNDEFINED_RATES[c] not in features.columns]
        if missing:
            raise ModelInputError(f"customer_features lacks column(s) {', '.join(missing)} needed to tell where "
                             f"{', '.join(c for c in columns if c in fill)} have no denominator")
        todo = [c for c in columns if c in fill]
    else:
        todo = [c for c in columns if c in features.columns and (
            c in NULLABLE_RATES or (c in UNDEFINED_RATES and UNDEFINED_RATES[c] in features.columns))]
    if not todo:
        return features, {}
    out, used = features.copy(), {}
    for col in todo:
        undefined = undefined_mask(out, col)
        if fill is not None:
            used[col] = float(fill[col])
        else:
            known = out.loc[~undefined, col].to_numpy(float)
            used[col] = float(known.mean()) if len(known) else 0.0
        out[col] = out[col].astype(float)
        out.loc[undefined, col] = used[col]
    return out, used


def group_weights(x: np.ndarray, columns: tuple[str, ...],
                  groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS) -> np.ndarray:
    """Per-column weights: 1 / first singular value of the column's group (multiple factor analysis).

    ``x`` is the standardised matrix of ``columns``. A group of m perfectly
    correlated columns has first singular value sqrt(m) (per-row scaled), so
    it ends with the weight of a single column; a group of unrelated columns
    keeps nearly its full weight. ``groups=None`` weighs every column 1.
    """
    weights = np.ones(len(columns))
    if not groups or not len(x):
        return weights
    member = {c: g for g, cols in groups.items() for c in cols}
    for name in dict.fromkeys(member.get(c, c) for c in columns):
        idx = [j for j, c in enumerate(columns) if member.get(c, c) == name]
        if len(idx) < 2:
            continue
        first = float(np.linalg.svd(x[:, idx] / np.sqrt(len(x)), compute_uv=False)[0])
        if first > 0:
            weights[idx] = 1.0 / first
    return weights


def design_matrix(features: pd.DataFrame, columns: tuple[str, ...] = DEFAULT_SEGMENTATION_FEATURES,
                  groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS) -> np.ndarray:
    """The matrix segments are fitted on: derived features, undefined rates filled, log1p, standardisation, group weights."""
    x = numeric_matrix(fill_undefined_rates(add_derived_features(features, columns), columns)[0], columns)
    return x * group_weights(x, columns, groups)[None, :]


@dataclass
class SegmentationResult:
    labels: np.ndarray  # 0..k-1, model order
    k: int
    model: object
    candidates: pd.DataFrame  # one row per k tried
    metrics: dict[str, float] = field(default_factory=dict)
    algorithm: str = "kprototypes"
    numeric_columns: tuple[str, ...] = ()
    categorical_columns: tuple[str, ...] = ()
    #: Spectral k screening's clusterboot of the chosen k: mean Jaccard per model label and mean ARI over the
    #: resamples (``None`` when k was not screened); :func:`stability` uses it instead of refitting.
    screened_stability: tuple[np.ndarray, float] | None = None


def categorical_matrix(features: pd.DataFrame, columns: tuple[str, ...] = CATEGORICAL_FEATURES) -> np.ndarray:
    """Integer codes of the categorical traits (sorted category order), encoded once for every fit."""
    from include.segmentation.kprototypes import encode_categories

    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ModelInputError(f"customer_features lacks categorical column(s): {', '.join(missing)}")
    codes, _ = encode_categories(features[list(columns)].fillna("unknown").astype(str).to_numpy(dtype=object))
    return codes


def mixed_distance_matrix(x_num: np.ndarray, codes: np.ndarray, gamma: float) -> np.ndarray:
    """Pairwise k-prototypes dissimilarity (squared Euclidean + gamma x mismatches)."""
    from include.segmentation.kprototypes import dissimilarity

    return dissimilarity(x_num, codes, x_num, codes, gamma)


def _fit_one(algorithm: str, x_num, x_cat, k: int, seed: int, n_init: int, gamma: float | None = None,
             basis=None):
    if algorithm == "spectral":
        from include.segmentation.spectral import SpectralSegments

        model = SpectralSegments(k, random_state=seed, n_init=n_init).fit(x_num, basis=basis)
        return model, model.labels_, model.cost_
    if algorithm == "kmeans":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x_num)
        return model, model.labels_, float(model.inertia_)
    from include.segmentation.kprototypes import KPrototypes

    model = KPrototypes(k, gamma=gamma, n_init=n_init, random_state=seed).fit(x_num, x_cat)
    return model, model.labels_, float(model.cost_)


def evaluate_k(x_num, x_cat, k: int, *, algorithm: str, seed: int, n_init: int, sample_idx: np.ndarray,
               sample_distance: np.ndarray, basis=None) -> tuple[object, np.ndarray, dict[str, float]]:
    """Fit with ``k`` clusters; return the model, labels and quality metrics.

    Silhouette uses the model's own dissimilarity on a fixed sample (mixed-type
    for k-prototypes); Davies-Bouldin and Calinski-Harabasz use the numeric
    part only, so they are secondary checks for mixed data.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    model, labels, cost = _fit_one(algorithm, x_num, x_cat, k, seed, n_init, basis=basis)
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
             tolerance: float = 0.02, min_jaccard: float | None = None, largest_stable: bool = False,
             highly_stable: float = HIGHLY_STABLE_JACCARD) -> int:
    """The documented k rule.

    Candidates whose smallest segment holds less than ``min_share`` of customers
    are set aside (a segment too small to act on is no segment; if every
    candidate has one, all are kept). With ``min_jaccard`` and a ``min_jaccard``
    column (the screening bootstrap of :func:`fit_segments`; NaN = not screened),
    only candidates whose every segment reached it stay; if none did, the
    most stable screened candidate is returned: the least bad solution, which
    the stage's gate will then judge. Among the rest, the highest sampled
    silhouette wins; ties go to the smaller k.

    ``largest_stable`` (spectral segments): the largest k whose every segment was
    ``highly_stable`` (Hennig's "highly stable" Jaccard, 0.85) in at least
    :data:`HIGHLY_STABLE_SHARE` of the screening resamples (column ``highly_stable_share``;
    without it, the mean Jaccard against ``highly_stable``) wins instead, else the largest k
    whose every segment reached ``min_jaccard`` on average, as prediction strength picks the
    largest k whose clusters a refit reproduces (Tibshirani & Walther 2005): silhouette
    rewards compact, convex segments, which is what a graph-based segmentation does not
    assume, and a solution that splits a real group in two is not reproduced by refits.
    Why the share of resamples rather than the mean: a split that is not in the data is
    found by some refits and not by others (per-resample Jaccard near 1 or near 0.5), so
    its mean can still pass 0.85 (0.86-0.87 at k = 7-8 on the demo's weeks, against a
    planted 6) while its split is missing in a quarter to a half of the refits; a real
    group is recovered in (nearly) every refit. Hennig (2007) reads the same distribution
    through the counts of "recovered" and "dissolved" refits beside the mean. Last run's k
    is kept while it clears the same bar.

    With ``previous_k`` (last published run's k), that k is kept while it is in
    the pool and its silhouette is within ``tolerance`` of the best, so segments
    do not split and merge from week to week over noise-level differences.
    """
    eligible = candidates[candidates["smallest_segment_share"] >= min_share]
    pool = eligible if len(eligible) else candidates
    if min_jaccard is not None and "min_jaccard" in pool.columns:
        screened = pool[pool["min_jaccard"].notna()]
        stable = screened[screened["min_jaccard"] >= min_jaccard]
        if len(stable) and largest_stable:
            if "highly_stable_share" in stable.columns and stable["highly_stable_share"].notna().any():
                high = stable[stable["highly_stable_share"] >= HIGHLY_STABLE_SHARE]
            else:
                high = stable[stable["min_jaccard"] >= max(highly_stable, min_jaccard)]
            best_pool = high if len(high) else stable
            if previous_k is not None and previous_k in set(best_pool["k"].astype(int)):
                return int(previous_k)
            return int(best_pool["k"].max())
        if len(stable):
            pool = stable
        elif len(screened):
            most = screened.sort_values(["min_jaccard", "k"], ascending=[False, True]).iloc[0]
            log.warning("no screened k reaches min_jaccard %.2f; the most stable is k=%d (%.2f)",
                        min_jaccard, int(most["k"]), most["min_jaccard"])
            return int(most["k"])
    best = pool.sort_values(["silhouette", "k"], ascending=[False, True]).iloc[0]
    if previous_k is not None and previous_k in set(pool["k"].astype(int)):
        kept = pool[pool["k"] == previous_k].iloc[0]
        if kept["silhouette"] >= best["silhouette"] - tolerance:
            return int(previous_k)
    return int(best["k"])


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
        raise ModelInputError(f"customer_features lacks column(s): {', '.join(missing)}")
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
        raise ModelInputError("customer_features has no numeric feature that varies between customers")
    return tuple(columns)


def _columns_present(features: pd.DataFrame, numeric_columns, categorical_columns):
    if numeric_columns is None:
        # Only features with data this run: a constant column separates nobody.
        numeric_columns = segmentation_features(features)[0]
    numeric = tuple(numeric_columns)
    if not numeric:
        raise ModelInputError("customer_features has no numeric feature to segment on (none varies between customers)")
    categorical = tuple(CATEGORICAL_FEATURES if categorical_columns is None else categorical_columns)
    return numeric, categorical


def segmentation_matrices(features: pd.DataFrame, numeric_columns: tuple[str, ...] | None = None,
                          categorical_columns: tuple[str, ...] | None = None,
                          feature_groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS,
                          ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Numeric design matrix and categorical codes (``(n, 0)`` without traits), and the columns used."""
    numeric, categorical = _columns_present(features, numeric_columns, categorical_columns)
    x_num = design_matrix(features, numeric, feature_groups)
    x_cat = categorical_matrix(features, categorical) if categorical else np.zeros((len(features), 0), np.int64)
    return x_num, x_cat, numeric, categorical


@dataclass(frozen=True)
class Design:
    """How customer features become the rows a fitted model assigns (see :func:`prepare`).

    The log1p flags, the means and standard deviations, the group weights and the
    category levels are those of the customers the model was fitted on, so rows
    scored later (in chunks, or another day) land in the same space.
    """

    numeric_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    levels: tuple[tuple[str, ...], ...]
    undefined_fill: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: pd.DataFrame, numeric_columns: tuple[str, ...], categorical_columns: tuple[str, ...],
            feature_groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS) -> Design:
        return cls.fit_matrix(features, numeric_columns, categorical_columns, feature_groups)[0]

    @classmethod
    def fit_matrix(cls, features: pd.DataFrame, numeric_columns: tuple[str, ...],
                   categorical_columns: tuple[str, ...],
                   feature_groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS) -> tuple[Design, np.ndarray]:
        """The design and the numeric matrix of ``features`` in it, from one pass.

        The matrix is :func:`design_matrix`'s (the same operations in the same order, so the same
        numbers) and :meth:`numeric`'s of the same rows; :func:`fit_segments` used to compute it and
        then the design, each filling, logging and standardising the 480,000 rows again.
        """
        filled, fill = fill_undefined_rates(add_derived_features(features, numeric_columns), numeric_columns)
        raw = _logged(filled, numeric_columns)
        mean, std = raw.mean(axis=0), raw.std(axis=0)
        std[std == 0] = 1.0
        standard = (raw - mean) / std
        weights = group_weights(standard, numeric_columns, feature_groups)
        levels = tuple(tuple(sorted(features[c].fillna("unknown").astype(str).unique())) for c in categorical_columns)
        design = cls(tuple(numeric_columns), tuple(categorical_columns), mean, std, weights, levels, fill)
        return design, standard * weights[None, :]

    def numeric(self, features: pd.DataFrame) -> np.ndarray:
        filled, _ = fill_undefined_rates(add_derived_features(features, self.numeric_columns), self.numeric_columns,
                                         self.undefined_fill)
        raw = _logged(filled, self.numeric_columns)
        return (raw - self.mean) / self.std * self.weights

    def categorical(self, features: pd.DataFrame) -> np.ndarray:
        """Codes in the fitted levels' order; a value not seen in fitting gets a code no prototype has."""
        missing = [c for c in self.categorical_columns if c not in features.columns]
        if missing:
            raise ModelInputError(f"customer_features lacks categorical column(s): {', '.join(missing)}")
        codes = np.zeros((len(features), len(self.categorical_columns)), np.int64)
        for j, (col, levels) in enumerate(zip(self.categorical_columns, self.levels, strict=True)):
            values = features[col].fillna("unknown").astype(str).to_numpy()
            pos = np.searchsorted(levels, values)
            known = (pos < len(levels)) & (np.asarray(levels, dtype=object)[np.minimum(pos, len(levels) - 1)] == values)
            codes[:, j] = np.where(known, pos, len(levels))
        return codes


def _logged(features: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """The columns as floats with the skewed ones log1p-transformed; NaN and negatives named."""
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ModelInputError(f"customer_features lacks column(s): {', '.join(missing)}")
    x = features[list(columns)].to_numpy(dtype=float, copy=True)
    if not np.isfinite(x).all():
        bad = [c for c, n in zip(columns, (~np.isfinite(x)).sum(axis=0), strict=True) if n]
        raise ModelInputError(f"customer_features has NaN or infinite values in column(s): {', '.join(bad)}")
    for j, col in enumerate(columns):
        if col in SKEWED_FEATURES:
            if (x[:, j] < 0).any():
                raise ModelInputError(f"customer_features.{col} has negative values in {int((x[:, j] < 0).sum())} row(s)"
                                      + ("" if "customer_key" not in features else ", e.g. customer_key="
                                         f"{features['customer_key'].iloc[int(np.argmax(x[:, j] < 0))]!r}")
                                      + "; cannot log-transform")
            x[:, j] = np.log1p(x[:, j])
    return x


def prepare(features: pd.DataFrame, model) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``model`` (``SegmentationResult.model``) assigns: numeric matrix and category codes.

    Uses the model's :class:`Design` (``model.design_``, set by :func:`fit_segments`), so
    any batch of customers is transformed as the fitted ones were.
    """
    design = getattr(model, "design_", None)
    if design is None:
        raise ValueError("model has no design_: fit it with fit_segments")
    return design.numeric(features), design.categorical(features)


def assign(model, prepared_rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Segment (model label order) of each prepared row, as the fitted customers were assigned.

    k-prototypes: nearest prototype under its mixed cost; KMeans: nearest centroid;
    spectral: majority segment of the nearest sampled customers.
    """
    x_num, x_cat = prepared_rows
    from include.segmentation.kprototypes import KPrototypes

    if isinstance(model, KPrototypes):
        return model.predict(x_num, x_cat)
    return np.asarray(model.predict(x_num))


def _best_jaccard(orig: np.ndarray, boot: np.ndarray, k: int, k_boot: int) -> np.ndarray:
    """(k,) Jaccard of every original cluster with its most similar bootstrap cluster."""
    overlap = np.zeros((k, k_boot))
    np.add.at(overlap, (orig, boot), 1)
    union = overlap.sum(axis=1)[:, None] + overlap.sum(axis=0)[None, :] - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, overlap / union, 0.0).max(axis=1)


def bootstrap_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """The distinct rows of one bootstrap draw of ``n`` from ``n``, sorted (about 63% of them).

    Hennig's ``clusterboot`` uses each point drawn more than once only once by default
    (``multipleboot=FALSE``): a duplicated customer is its own nearest neighbour at distance 0,
    which ties rows into cliques of the neighbour graph that the data do not have.
    """
    return np.unique(rng.integers(0, n, n))


#: Rows :func:`_distinct_profiles` looks at first: when they already hold ``enough`` distinct profiles
#: the rest is not sorted (a sort of every row took 0.8-1.0 CPU-s at 480,000 customers).
DISTINCT_PROFILES_FIRST_ROWS = 1_000


def _distinct_profiles(x_num: np.ndarray, x_cat: np.ndarray, enough: int | None = None) -> int:
    """Distinct customers as the fit sees them: rows of the design that differ (beyond rounding).

    The guard at the fit's entry: with fewer distinct rows than segments every k-means
    and neighbour graph of the k screen is degenerate (silhouettes of +1/-1, duplicate
    rows tied into cliques) and the screen ran for minutes before failing or worse.
    With ``enough``, the count stops there: when the first :data:`DISTINCT_PROFILES_FIRST_ROWS`
    rows already hold ``enough`` distinct profiles, their count is returned (at least ``enough``,
    which is all the caller asks), else every row is counted.
    """
    if enough is not None and len(x_num) > DISTINCT_PROFILES_FIRST_ROWS:
        first = _distinct_profiles(x_num[:DISTINCT_PROFILES_FIRST_ROWS], x_cat[:DISTINCT_PROFILES_FIRST_ROWS])
        if first >= enough:
            return first
    rows = np.round(np.asarray(x_num, dtype=np.float64), 9)
    if x_cat.shape[1]:
        rows = np.hstack([rows, x_cat.astype(np.float64)])
    return len(np.unique(rows, axis=0))


def _spectral_screen(x_num: np.ndarray, labels_by_k: dict[int, np.ndarray], *, n_boot: int,
                     seed: int, n_init: int = 10) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Clusterboot of spectral segmentations for several k at once: ``{k: (n_boot, k) Jaccard}``, ``{k: (n_boot,) ARI}``.

    Each resample gets one sample, graph, embedding and neighbour search
    (:class:`~include.segmentation.spectral.SpectralBasis`), and every k is refitted from them. The
    ARI compares the solution with the refit on the resampled customers (the refit labels no others).
    """
    from sklearn.metrics import adjusted_rand_score

    from include.segmentation.spectral import SpectralBasis, SpectralSegments

    n = len(x_num)
    rng = np.random.default_rng(seed)
    out = {k: np.zeros((n_boot, k)) for k in labels_by_k}
    aris = {k: np.zeros(n_boot) for k in labels_by_k}
    for b in range(n_boot):
        idx = bootstrap_rows(rng, n)
        basis = SpectralBasis.build(x_num[idx], max(labels_by_k), seed=seed + b + 1)
        for k, labels in labels_by_k.items():
            refit = SpectralSegments(k, random_state=seed + b + 1, n_init=n_init).fit(x_num[idx], basis=basis)
            out[k][b] = _best_jaccard(labels[idx], refit.labels_, k, k)
            aris[k][b] = adjusted_rand_score(labels[idx], refit.labels_)
    return out, aris


def _clusterboot(x_num: np.ndarray, x_cat: np.ndarray, labels: np.ndarray, k: int, *, algorithm: str,
                 n_boot: int, seed: int, n_init: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-resample Jaccard of every cluster (n_boot, k) and per-resample ARI (n_boot,)."""
    from sklearn.metrics import adjusted_rand_score

    n = len(x_num)
    rng = np.random.default_rng(seed)
    jaccard = np.zeros((n_boot, k))
    aris = np.zeros(n_boot)
    for b in range(n_boot):
        idx = bootstrap_rows(rng, n)
        model, _, _ = _fit_one(algorithm, x_num[idx], x_cat[idx], k, seed + b + 1, n_init)
        pred = model.predict(x_num, x_cat) if algorithm == "kprototypes" else model.predict(x_num)
        aris[b] = adjusted_rand_score(labels, pred)
        jaccard[b] = _best_jaccard(labels[idx], pred[idx], k, k)
    return jaccard, aris


def fit_segments(
    features: pd.DataFrame, *, k_min: int = 3, k_max: int = 8, k: int | None = None,
    seed: int = 42, silhouette_sample: int = 5000, algorithm: str = "kprototypes", n_init: int = 4,
    previous_k: int | None = None, numeric_columns: tuple[str, ...] | None = None,
    categorical_columns: tuple[str, ...] | None = None,
    feature_groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS,
    min_jaccard: float | None = 0.75, stability_candidates: int = 3, stability_boot: int = 20,
    stability_sample: int = 20_000,
) -> SegmentationResult:
    """Choose k (unless given) and fit the segmentation.

    Parameters
    ----------
    algorithm
        ``"kprototypes"`` (numeric + categorical traits) or ``"kmeans"`` (numeric
        only); k-prototypes falls back to KMeans when no categorical trait varies.
    numeric_columns, categorical_columns
        The features to use (default :data:`DEFAULT_SEGMENTATION_FEATURES` and
        ``CATEGORICAL_FEATURES``); the caller passes only the ones its data have.
        ``order_rate`` is derived here when listed.
    feature_groups
        Groups of features weighed as one (:func:`design_matrix`); ``None``: every
        standardised feature weighs 1.
    min_jaccard, stability_candidates, stability_boot, stability_sample
        k screening: the ``stability_candidates`` best k by silhouette get a
        clusterboot of ``stability_boot`` refits on at most ``stability_sample``
        rows; :func:`choose_k` then keeps only k whose every segment reaches
        ``min_jaccard``, or :data:`STABLE_JACCARD` if that is higher (``None`` or
        ``stability_candidates=0``: silhouette only). Spectral screens every k.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}")
    n = len(features)
    if n < 3:
        raise ModelInputError(f"segmentation needs at least 3 customers, got {n}")
    numeric, categorical = _columns_present(features, numeric_columns, categorical_columns)
    if algorithm in ("kmeans", "spectral"):
        categorical = ()  # numeric features only: the traits are not encoded at all
    x_cat = categorical_matrix(features, categorical) if categorical else np.zeros((n, 0), np.int64)
    if algorithm == "kprototypes" and all(col.max(initial=0) == 0 for col in x_cat.T):
        log.info("no categorical trait varies: using KMeans on the numeric features")
        algorithm = "kmeans"
        categorical, x_cat = (), np.zeros((n, 0), np.int64)
    # One pass gives the design and the matrix (design_matrix's numbers): see Design.fit_matrix.
    design, x_num = Design.fit_matrix(features, numeric, categorical, feature_groups)
    profiles = _distinct_profiles(x_num, x_cat, enough=max(2, k or k_max) + 1)  # more than any k asks
    if profiles < max(2, k or k_min):
        raise ModelInputError(f"customer_features: the {n} customers have {profiles} distinct profile(s) over "
                              f"{', '.join((*numeric, *categorical))}: too few for {k or k_min} segments")
    rng = np.random.default_rng(seed)
    sample_idx = np.sort(rng.choice(n, size=min(silhouette_sample, n), replace=False))
    if algorithm == "kprototypes":
        gamma = 0.5 * float(np.mean(x_num.std(axis=0)))
        sample_distance = mixed_distance_matrix(x_num[sample_idx], x_cat[sample_idx], gamma)
    else:
        from sklearn.metrics import pairwise_distances

        sample_distance = pairwise_distances(x_num[sample_idx])
    np.fill_diagonal(sample_distance, 0.0)
    ks = [k] if k else list(range(k_min, min(k_max, n - 1, profiles) + 1))
    basis = None
    if algorithm == "spectral":
        from include.segmentation.spectral import SpectralBasis

        # One sample, graph and embedding for every k: only the k-means in the eigenvectors differs.
        basis = SpectralBasis.build(x_num, max(ks), seed=seed)
    fits, rows = {}, []
    for kk in ks:
        model, labels, metrics = evaluate_k(x_num, x_cat, kk, algorithm=algorithm, seed=seed, n_init=n_init,
                                            sample_idx=sample_idx, sample_distance=sample_distance, basis=basis)
        fits[kk] = (model, labels)
        rows.append(metrics)
        log.info("k=%d cost=%.1f silhouette=%.3f davies_bouldin=%.3f smallest=%.1f%%", kk, metrics["cost"],
                 metrics["silhouette"], metrics["davies_bouldin"], 100 * metrics["smallest_segment_share"])
    candidates = pd.DataFrame(rows)
    candidates["min_jaccard"] = np.nan
    screened: dict[int, np.ndarray] = {}
    screened_ari: dict[int, np.ndarray] = {}
    if len(ks) > 1 and min_jaccard is not None and algorithm == "spectral":
        # Every candidate is screened: one graph per resample serves all k.
        screen = np.sort(rng.choice(n, size=min(stability_sample, n), replace=False))
        screened, screened_ari = _spectral_screen(x_num[screen], {kk: fits[kk][1][screen] for kk in ks},
                                                  n_boot=stability_boot, seed=seed, n_init=n_init)
        candidates["highly_stable_share"] = np.nan
        for kk, jac in screened.items():
            at_k = candidates["k"] == kk
            least, share = float(jac.mean(axis=0).min()), float((jac >= HIGHLY_STABLE_JACCARD).mean(axis=0).min())
            candidates.loc[at_k, "min_jaccard"], candidates.loc[at_k, "highly_stable_share"] = least, share
            log.info("k=%d screening bootstrap: smallest segment Jaccard %.2f, highly stable in %.0f%% of resamples",
                     kk, least, 100 * share)
    elif len(ks) > 1 and min_jaccard is not None and stability_candidates > 0:
        eligible = candidates[candidates["smallest_segment_share"] >= 0.02]
        pool = eligible if len(eligible) else candidates
        top = pool.sort_values(["silhouette", "k"], ascending=[False, True])["k"].astype(int)[:stability_candidates]
        screen = np.sort(rng.choice(n, size=min(stability_sample, n), replace=False))
        for kk in top:
            jac, _ = _clusterboot(x_num[screen], x_cat[screen], fits[kk][1][screen], kk, algorithm=algorithm,
                                  n_boot=stability_boot, seed=seed, n_init=max(1, n_init // 2))
            candidates.loc[candidates["k"] == kk, "min_jaccard"] = float(jac.mean(axis=0).min())
            log.info("k=%d screening bootstrap: smallest segment Jaccard %.2f", kk, jac.mean(axis=0).min())
    # k is chosen among solutions stable by Hennig's standard even when the gate is laxer.
    screen_jaccard = None if min_jaccard is None else max(min_jaccard, STABLE_JACCARD)
    best_k = choose_k(candidates, previous_k=previous_k, min_jaccard=screen_jaccard,
                      largest_stable=algorithm == "spectral")
    model, labels = fits[best_k]
    model.design_ = design  # how new rows are prepared for this model (prepare / assign)
    chosen = candidates[candidates["k"] == best_k].iloc[0].to_dict()
    stability = None
    if best_k in screened:
        stability = (screened[best_k].mean(axis=0), float(screened_ari[best_k].mean()))
    return SegmentationResult(np.asarray(labels), best_k, model, candidates,
                              {f"chosen_{m}": float(v) for m, v in chosen.items() if pd.notna(v)}, algorithm,
                              numeric, categorical, stability)


def bootstrap_stability(
    features: pd.DataFrame, labels: np.ndarray, k: int, *, algorithm: str = "kprototypes",
    n_boot: int = 30, seed: int = 42, n_init: int = 2, numeric_columns: tuple[str, ...] | None = None,
    categorical_columns: tuple[str, ...] | None = None,
    feature_groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS, max_rows: int | None = None,
) -> tuple[np.ndarray, float]:
    """Hennig's clusterboot: per-cluster mean Jaccard over ``n_boot`` bootstrap refits, and mean ARI.

    Each resample (the distinct rows of a draw with replacement, :func:`bootstrap_rows`) is
    refitted with the same k on the same design as :func:`fit_segments` (pass the same columns
    and groups; a result's ``numeric_columns``/``categorical_columns`` say which were used).
    For every original cluster, the Jaccard similarity with the most similar
    bootstrap cluster is computed on the resampled points, then
    averaged over resamples (>= 0.75 stable, >= 0.85 highly stable, < 0.5
    dissolved; Hennig 2007). The adjusted Rand index compares the full
    solution with the refit's assignment of every customer.

    ``max_rows``: the clusterboot runs on a seeded subsample of at most this many
    customers (default: all for k-prototypes and KMeans, :data:`SPECTRAL_BOOTSTRAP_ROWS` for
    spectral, whose every refit assigns all rows by a neighbour search); each
    segment's Jaccard is then estimated on its sampled members.

    Returns
    -------
    jaccard : (k,) mean Jaccard per cluster (model label order)
    mean_ari : float
    """
    if algorithm in ("kmeans", "spectral"):
        categorical_columns = ()
    x_num, x_cat, _, _ = segmentation_matrices(features, numeric_columns, categorical_columns, feature_groups)
    labels = np.asarray(labels)
    if max_rows is None and algorithm == "spectral":
        max_rows = SPECTRAL_BOOTSTRAP_ROWS
    if max_rows is not None and len(labels) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), size=max_rows, replace=False))
        x_num, x_cat, labels = x_num[keep], x_cat[keep], labels[keep]
    jaccard, aris = _clusterboot(x_num, x_cat, labels, k, algorithm=algorithm, n_boot=n_boot,
                                 seed=seed, n_init=n_init)
    return jaccard.mean(axis=0), float(aris.mean())


def stability_gate(profiles: pd.DataFrame, min_jaccard: float) -> str | None:
    """Why the fit fails the stability half of the quality gate, or ``None`` when it passes.

    ``profiles``: one row per fit segment with ``fit_segment``, ``customers`` and ``jaccard`` (its
    bootstrap Jaccard, Hennig 2007). Each segment below ``min_jaccard`` is named with its figures.
    """
    failed = profiles[profiles["jaccard"] < min_jaccard]
    return "; ".join(
        f"fit segment {r.fit_segment} ({r.customers:,} customers) bootstrap Jaccard {r.jaccard:.2f} "
        f"< min_jaccard {min_jaccard}" for r in failed.itertuples()) or None


def stability(features: pd.DataFrame, result: SegmentationResult, *, n_boot: int, seed: int,
              n_init: int = 2) -> tuple[np.ndarray, float]:
    """Per-segment mean bootstrap Jaccard (model label order) and mean ARI of a fit: the quality gate's numbers.

    A spectral fit whose k was screened already has them: the screen is Hennig's clusterboot of every
    candidate k on the same resamples (``n_boot`` of them when ``fit_segments`` was given
    ``stability_boot=n_boot``), so the chosen k's rows are reused rather than refitted (refitting them
    took 25 of 57 CPU-seconds on the CD retailer's 23,570 customers). Otherwise
    :func:`bootstrap_stability` refits ``n_boot`` resamples.
    """
    if result.screened_stability is not None:
        return result.screened_stability
    return bootstrap_stability(features, result.labels, result.k, algorithm=result.algorithm, n_boot=n_boot,
                               seed=seed, n_init=n_init, numeric_columns=result.numeric_columns,
                               categorical_columns=result.categorical_columns)


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
    (default: above every id the previous run used), so an id ``previous`` does not hold is never
    handed out here (:func:`include.segmentation.history.fold_segment_ids` gives a retired id back
    only to a segment within ``max_distance`` of its last centroid). Returns ``{current id: stable
    id}`` and the matched distances.
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


def segment_profiles(features: pd.DataFrame, labels: np.ndarray, as_of_date: dt.date) -> pd.DataFrame:
    """Per fit segment: size, share and the mean of every numeric feature (original units).

    The fit's own facts (``segment_profiles``, keyed by ``fit_segment``); names, rules and stable
    ids are the labeller's (:mod:`include.labels`).
    """
    means = features[list(NUMERIC_FEATURES)].groupby(labels).mean()
    sizes = pd.Series(labels).value_counts().sort_index()
    out = means.copy()
    out.insert(0, "customer_share", sizes / sizes.sum())
    out.insert(0, "customers", sizes)
    out.index.name = "fit_segment"
    out = out.reset_index()
    out.insert(0, "as_of_date", as_of_date)
    return out
