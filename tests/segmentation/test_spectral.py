"""Spectral segments: what centroid models miss, one assignment rule for fitted and new rows."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from include.segmentation.model import assign, bootstrap_rows, bootstrap_stability, choose_k, fit_segments, prepare
from include.segmentation.spectral import SpectralBasis, SpectralSegments, vote
from tests.segmentation.test_model import blobs


def small_core_beside_a_diffuse_crowd(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """900 rows spread widely and 100 packed tightly just beyond the crowd's edge."""
    rng = np.random.default_rng(seed)
    crowd = rng.normal(0.0, 2.0, (900, 2))
    core = rng.normal((7.0, 0.0), 0.3, (100, 2))
    return np.vstack([crowd, core]), np.r_[np.zeros(900, int), np.ones(100, int)]


def test_spectral_finds_the_small_dense_group_that_kmeans_cuts_through():
    from sklearn.cluster import KMeans

    x, truth = small_core_beside_a_diffuse_crowd()
    spectral = SpectralSegments(2, random_state=0).fit(x)
    kmeans = KMeans(2, n_init=4, random_state=0).fit_predict(x)
    assert adjusted_rand_score(truth, spectral.labels_) > 0.9
    assert adjusted_rand_score(truth, kmeans) < adjusted_rand_score(truth, spectral.labels_) - 0.2


def test_a_basis_serves_every_k_and_sampled_rows_vote_for_everyone():
    x, truth = small_core_beside_a_diffuse_crowd(1)
    basis = SpectralBasis.build(x, 4, seed=3, sample=400)
    assert len(basis.sample_idx) == 400 and basis.embedding.shape == (400, 4) and basis.neighbours.shape[0] == 1000
    for k in (2, 3, 4):
        model = SpectralSegments(k, random_state=3).fit(x, basis=basis)
        assert set(model.labels_) == set(range(k))
        assert np.array_equal(model.predict(x), model.labels_)  # fitted rows follow the same rule as new ones
    two = SpectralSegments(2, random_state=3).fit(x, basis=basis)
    assert adjusted_rand_score(truth, two.labels_) > 0.9  # 400 sampled rows label all 1,000
    with pytest.raises(ValueError, match="k=6"):
        SpectralSegments(6).fit(x, basis=basis)


def test_vote_takes_the_majority_and_breaks_ties_by_the_nearest():
    labels = np.array([0, 1, 1, 2])
    neighbours = np.array([[0, 1, 2], [0, 1, 3], [3, 0, 1]])
    assert vote(labels, neighbours, 3).tolist() == [1, 0, 2]


def test_spectral_is_deterministic_and_names_bad_input():
    df, _ = blobs()
    a = fit_segments(df, k_min=2, k_max=4, seed=3, algorithm="spectral", stability_boot=4)
    b = fit_segments(df, k_min=2, k_max=4, seed=3, algorithm="spectral", stability_boot=4)
    assert np.array_equal(a.labels, b.labels) and a.categorical_columns == ()
    with pytest.raises(ValueError, match="infinite"):
        SpectralSegments(2).fit(np.array([[0.0, np.inf]] * 10))
    with pytest.raises(ValueError, match="algorithm"):
        fit_segments(df, k=3, algorithm="dbscan")


def test_choose_k_largest_stable_rule():
    candidates = pd.DataFrame({"k": [3, 4, 5, 6], "silhouette": [0.5, 0.4, 0.3, 0.6],
                               "smallest_segment_share": [0.2] * 4, "min_jaccard": [0.9, 0.8, 0.6, 0.7]})
    assert choose_k(candidates, min_jaccard=0.75, largest_stable=True) == 3  # the only highly stable k
    barely = candidates.assign(min_jaccard=[0.8, 0.78, 0.6, 0.7])
    assert choose_k(barely, min_jaccard=0.75, largest_stable=True) == 4  # none highly stable: largest stable
    split = candidates.assign(min_jaccard=[0.9, 0.86, 0.6, 0.78])
    assert choose_k(split, min_jaccard=0.75, largest_stable=True) == 4  # 6 is barely stable: a split
    assert choose_k(candidates, min_jaccard=0.75) == 3  # silhouette among the stable
    assert choose_k(candidates, min_jaccard=0.75, largest_stable=True, previous_k=3) == 3
    assert choose_k(candidates, min_jaccard=0.95, largest_stable=True) == 3  # none stable: the most stable
    # With the per-resample share: a split found by only some refits can still average above 0.85.
    shares = candidates.assign(min_jaccard=[0.99, 0.95, 0.6, 0.87], highly_stable_share=[1.0, 0.95, 0.1, 0.6])
    assert choose_k(shares, min_jaccard=0.75, largest_stable=True) == 4
    assert choose_k(shares.assign(highly_stable_share=[1.0, 0.95, 0.1, 0.9]), min_jaccard=0.75,
                    largest_stable=True) == 6


def test_bootstrap_rows_are_the_distinct_rows_of_a_draw():
    rows = bootstrap_rows(np.random.default_rng(0), 10_000)
    assert np.array_equal(rows, np.unique(rows)) and rows.min() >= 0 and rows.max() < 10_000
    assert 0.6 < len(rows) / 10_000 < 0.66  # 1 - 1/e of the rows, each once


@pytest.mark.parametrize("algorithm", ["spectral", "kmeans", "kprototypes"])
def test_prepare_and_assign_reproduce_the_fitted_labels_for_new_batches(algorithm):
    df, _ = blobs()
    result = fit_segments(df, k=3, seed=1, algorithm=algorithm)
    parts = [df.iloc[i:i + 120] for i in range(0, len(df), 120)]  # batches scored apart
    again = np.concatenate([assign(result.model, prepare(part, result.model)) for part in parts])
    assert (again == result.labels).mean() > 0.99
    with pytest.raises(ValueError, match="monetary"):
        prepare(df.drop(columns="monetary"), result.model)


def test_spectral_bootstrap_on_a_subsample_still_scores_every_segment():
    df, _ = blobs()
    result = fit_segments(df, k=3, seed=1, algorithm="spectral")
    jaccard, ari = bootstrap_stability(df, result.labels, 3, algorithm="spectral", n_boot=4, seed=2, max_rows=300)
    assert jaccard.shape == (3,) and (jaccard > 0.9).all() and ari > 0.9
