"""How good is this run's identity resolution, without planted truth?

Every run estimates its own quality from what it has: the trained model and
the scored pairs (Fellegi & Sunter 1969; the same reading as Splink's match
probability, Linacre et al. 2022), and the clusters it formed.

- ``estimated_precision``: the mean match probability of the links the run
  followed, i.e. the share of them the model itself expects to be true
  (Σ p over links / number of links). Links of equal strong ids that the
  model scored below the threshold count with their own probability.
- ``estimated_recall``: the share of the expected matches among the scored
  pairs that the links hold (Σ p over links / Σ p over every scored pair
  with p ≥ :data:`~include.identity.scoring.PAIR_FLOOR`). Matches no blocking
  rule ever put side by side are not in the denominator: an upper bound.
- ``estimated_f1``: their harmonic mean.
- ``links_near_threshold_share``: the share of links within 2 bits of match
  weight above the threshold (a model that barely separates matches from
  non-matches puts many there).
- cluster sizes: the share of records alone, the largest cluster, the share of
  multi-record clusters above 10 records (transitive chains show up there);
- ``contradictory_id_cluster_share``: the share of multi-record clusters
  holding two values of one strong id (``id_*``) that are not one value keyed
  twice (over-merging);
- ``equal_id_pairs_apart_share``: the share of record pairs with an equal
  strong id that sit in different clusters (under-linking; by the rule of
  :mod:`include.identity.scoring` only pairs everything else contradicts).

The probabilities are the model's own and inherit its assumptions (conditional
independence of the comparisons): on generated person files with truth the
estimates were within 0.001 of the true pairwise recall and 0.01 of the true
precision, the precision optimistic where households share surname and
address (measured figures in ``benchmarks/bench_identity.py``). In an
incremental run the pair estimates cover the pairs that run scored (new and
changed records, and clusters that lost a record): ``scope`` says which.

A run is held to a bar (settings ``identity_min_estimated_precision`` and
``identity_min_estimated_recall``): :func:`check_bar` says whether it passed
and why not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from include.identity.clustering import _conflicted_components
from include.identity.scoring import PAIR_FLOOR, ScoredPairs

SCOPE_ALL = "all scored pairs"
SCOPE_INCREMENTAL = "pairs of new and changed records"
#: A multi-record cluster above this many records counts as large.
LARGE_CLUSTER = 10


@dataclass
class QualityEstimate:
    """The truth-free quality figures of one run (see the module docstring); ``None`` when not measurable."""

    scope: str
    pairs_scored: int
    links: int
    estimated_precision: float | None
    estimated_recall: float | None
    estimated_f1: float | None
    links_near_threshold_share: float | None
    singleton_share: float
    largest_cluster: int
    large_cluster_share: float
    contradictory_id_cluster_share: float | None
    equal_id_pairs_apart_share: float | None
    equal_ids_contradicted: int
    links_refused: int

    def metrics(self) -> dict[str, float]:
        """The numeric figures, for MLflow (``None`` left out)."""
        return {k: float(v) for k, v in asdict(self).items() if isinstance(v, (int, float)) and v is not None}


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def equal_id_pairs_apart(clusters: np.ndarray, strong: pd.DataFrame) -> tuple[int, int]:
    """Record pairs with an equal ``id_*`` value, and how many of them sit in different clusters."""
    pairs = apart = 0
    for col in strong.columns:
        have = strong[col].notna().to_numpy()
        if not have.any():
            continue
        frame = pd.DataFrame({"v": strong[col][have].astype(str).to_numpy(), "c": clusters[have]})
        per_value = frame.groupby("v").size()
        per_cluster = frame.groupby(["v", "c"]).size()
        total = int((per_value * (per_value - 1) // 2).sum())
        together = int((per_cluster * (per_cluster - 1) // 2).sum())
        pairs += total
        apart += total - together
    return pairs, apart


def estimate_quality(scored: ScoredPairs, clusters: np.ndarray, strong: pd.DataFrame, *, scope: str,
                     links_refused: int = 0) -> QualityEstimate:
    """The figures of the module docstring for one run.

    Parameters
    ----------
    scored
        The pairs the run scored and the links it took from them.
    clusters
        Cluster label of every record of the run.
    strong
        The ``id_*`` columns of every record (aligned with ``clusters``; may have none).
    scope
        :data:`SCOPE_ALL` or :data:`SCOPE_INCREMENTAL`.
    links_refused
        Links the clustering refused (:attr:`include.identity.clustering.Clustering.refused`).
    """
    totals = scored.totals
    links = scored.links
    n_links = len(links)
    true_links = float(links["match_probability"].sum()) if n_links else 0.0
    # Equal-id links the model scored below the threshold are links too: in both sums (the
    # denominator holds every scored pair from PAIR_FLOOR up, so only those below it are added).
    extra = links[(links["kind"] != "model") & (links["match_probability"] < PAIR_FLOOR)] if n_links else links
    precision = _ratio(true_links, n_links)
    recall = _ratio(true_links, float(totals["expected_matches"]) + float(extra["match_probability"].sum()))
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else None
    sizes = pd.Series(clusters).value_counts()
    multi = sizes[sizes > 1]
    ids = strong[[c for c in strong.columns if str(c).startswith("id_")]] if strong is not None else pd.DataFrame()
    contradictory = apart_share = None
    if ids.shape[1]:
        conflicted = _conflicted_components(np.asarray(clusters), ids.reset_index(drop=True))
        contradictory = _ratio(len(conflicted), len(multi)) if len(multi) else 0.0
        pairs, apart = equal_id_pairs_apart(np.asarray(clusters), ids.reset_index(drop=True))
        apart_share = _ratio(apart, pairs) if pairs else 0.0
    return QualityEstimate(
        scope=scope, pairs_scored=int(totals["pairs_scored"]), links=n_links,
        estimated_precision=precision, estimated_recall=recall, estimated_f1=f1,
        links_near_threshold_share=_ratio(float(totals["links_near_threshold"]), float(totals["links"])),
        singleton_share=float((sizes == 1).sum() / len(clusters)) if len(clusters) else 0.0,
        largest_cluster=int(sizes.max()) if len(sizes) else 0,
        large_cluster_share=float((multi > LARGE_CLUSTER).mean()) if len(multi) else 0.0,
        contradictory_id_cluster_share=contradictory, equal_id_pairs_apart_share=apart_share,
        equal_ids_contradicted=scored.equal_ids_contradicted, links_refused=int(links_refused),
    )


def exact_quality(clusters: np.ndarray, strong: pd.DataFrame | None, *, scope: str) -> QualityEstimate:
    """Figures of a run without a model (the exact rule or one source's own ids): no pair estimates."""
    empty = ScoredPairs(pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_probability", "kind"]))
    out = estimate_quality(empty, clusters, strong if strong is not None else pd.DataFrame(), scope=scope)
    out.estimated_precision = out.estimated_recall = out.estimated_f1 = None
    return out


def check_bar(estimate: QualityEstimate, min_precision: float, min_recall: float) -> str | None:
    """Why the run is below the bar (one sentence), or ``None`` when it is not.

    A figure that could not be estimated (no pairs scored) holds no run to the bar.
    """
    below = []
    for name, value, bar in (("precision", estimate.estimated_precision, min_precision),
                             ("recall", estimate.estimated_recall, min_recall)):
        if value is not None and not math.isnan(value) and value < bar:
            below.append(f"estimated {name} {value:.4f} < {bar}")
    if not below:
        return None
    return (f"identity quality below the bar ({'; '.join(below)}; {estimate.scope}, {estimate.links} links "
            f"from {estimate.pairs_scored} scored pairs)")
