"""The vectorised k-prototypes engine against kmodes' KPrototypes (the reference)."""

import numpy as np
import pytest
from kmodes.kprototypes import KPrototypes as ReferenceKPrototypes

from include.segmentation.kprototypes import KPrototypes, encode_categories, init_cao


def mixed_data(n=1500, k=4, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, 5))
    truth = rng.integers(0, k, n)
    x_num = centers[truth] + rng.normal(0, noise, (n, 5))
    x_cat = np.stack([
        np.where(rng.random(n) < 0.8, truth, rng.integers(0, k, n)).astype(str),
        rng.choice(["a", "b", "c"], n),
    ], axis=1).astype(object)
    return x_num, x_cat, truth


def reference_matrix(x_num, x_cat):
    return np.concatenate([x_num, x_cat], axis=1).astype(object), [x_num.shape[1] + j for j in range(x_cat.shape[1])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_initial_prototypes_give_the_same_labels_and_cost(seed):
    x_num, x_cat, _ = mixed_data(seed=seed, noise=1.5)
    codes, _ = encode_categories(x_cat)
    rng = np.random.default_rng(seed + 10)
    init_num = x_num[rng.choice(len(x_num), 4, replace=False)]
    init_cat = init_cao(codes, 4)
    ours = KPrototypes(4, init=(init_num, init_cat), max_iter=100, tol=0).fit(x_num, x_cat)
    x, cat_idx = reference_matrix(x_num, x_cat)
    ref = ReferenceKPrototypes(4, init=[init_num, init_cat.astype(np.uint16)], n_init=1, max_iter=100,
                               random_state=0).fit(x, categorical=cat_idx)
    assert ours.gamma_ == pytest.approx(ref.gamma)
    assert ours.cost_ == pytest.approx(ref.cost_, rel=1e-9)
    assert np.array_equal(ours.labels_, ref.labels_)


@pytest.mark.parametrize("init", ["Cao", "Huang"])
def test_best_cost_over_seeds_is_within_one_percent_of_kmodes(init):
    x_num, x_cat, _ = mixed_data(n=1200, k=5, seed=4, noise=2.0)
    x, cat_idx = reference_matrix(x_num, x_cat)
    ours = min(KPrototypes(5, init=init, n_init=3, random_state=s, tol=0).fit(x_num, x_cat).cost_ for s in range(3))
    ref = min(ReferenceKPrototypes(5, init=init, n_init=3, random_state=s).fit(x, categorical=cat_idx).cost_
              for s in range(3))
    assert ours <= ref * 1.01


def test_cost_is_the_documented_mixed_dissimilarity():
    x_num, x_cat, _ = mixed_data(n=300, seed=3)
    model = KPrototypes(3, n_init=2, random_state=0).fit(x_num, x_cat)
    codes, _ = encode_categories(x_cat)
    num = ((x_num - model.centroids_num_[model.labels_]) ** 2).sum()
    cat = (codes != model.centroids_cat_[model.labels_]).sum()
    assert model.cost_ == pytest.approx(num + model.gamma_ * cat)
    assert model.gamma_ == pytest.approx(0.5 * x_num.std(axis=0).mean())


def test_predict_matches_fit_labels_and_handles_unseen_categories():
    x_num, x_cat, _ = mixed_data(n=400, seed=5)
    model = KPrototypes(4, n_init=2, random_state=1).fit(x_num, x_cat)
    assert np.array_equal(model.predict(x_num, x_cat), model.labels_)
    unseen = x_cat.copy()
    unseen[:, 1] = "never-seen"
    assert model.predict(x_num, unseen).shape == (400,)


def test_same_seed_same_result():
    x_num, x_cat, _ = mixed_data(n=500, seed=6)
    a = KPrototypes(4, init="Huang", n_init=3, random_state=7).fit(x_num, x_cat)
    b = KPrototypes(4, init="Huang", n_init=3, random_state=7).fit(x_num, x_cat)
    assert np.array_equal(a.labels_, b.labels_) and a.cost_ == b.cost_


def test_bad_input_is_named():
    x_num, x_cat, _ = mixed_data(n=50)
    x_num[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KPrototypes(3).fit(x_num, x_cat)
    with pytest.raises(ValueError, match="clusters"):
        KPrototypes(80).fit(np.zeros((50, 2)), x_cat)
