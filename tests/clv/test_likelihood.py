"""The hand-written likelihoods: their values are pymc-marketing's, their gradients the finite differences."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from include.clv.cdnow import cdnow_summaries
from include.clv.errors import BoundaryFitError
from include.clv.likelihood import bgnbd_loglik, compress, gamma_gamma_loglik, maximise, mbgnbd_loglik
from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, ClvInputError


@pytest.fixture(scope="module")
def calibration():
    return cdnow_summaries()[1]


def _purchases(cal):
    return [cal[c].to_numpy(dtype=float) for c in ("frequency", "recency", "t")]


def _spend(cal):
    rep = cal[(cal["frequency"] > 0) & (cal["monetary_value"] > 0)]
    return [rep["frequency"].to_numpy(dtype=float), rep["monetary_value"].to_numpy(dtype=float)]


@pytest.mark.parametrize(("loglik", "point", "data"), [
    (bgnbd_loglik, [0.3, 4.0, 0.8, 2.5], _purchases),
    (bgnbd_loglik, [1.7, 0.6, 3.0, 0.4], _purchases),
    (mbgnbd_loglik, [0.5, 6.0, 0.9, 1.6], _purchases),
    (mbgnbd_loglik, [2.0, 0.5, 0.2, 7.0], _purchases),
    (gamma_gamma_loglik, [6.0, 3.7, 15.0], _spend),
    (gamma_gamma_loglik, [0.8, 9.0, 2.0], _spend),
])
def test_gradients_match_finite_differences(calibration, loglik, point, data):
    arrays = data(calibration)
    point = np.array(point)
    analytic = loglik(point, *arrays)[1].sum(axis=1)
    numeric = optimize.approx_fprime(point, lambda p: loglik(p, *arrays)[0].sum(), 1e-6 * point)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-4)


def test_loglik_values_are_pymc_marketings(calibration):
    """Same per-customer log-likelihood as pymc-marketing's distributions and Gamma-Gamma potential."""
    import pymc as pm
    import pytensor
    from pymc_marketing.clv.distributions import BetaGeoNBD as BetaGeoDist
    from pymc_marketing.clv.distributions import ModifiedBetaGeoNBD as ModifiedDist

    cal = calibration.head(300)
    x, tx, t = _purchases(cal)
    observed = np.stack([tx, x], axis=1)
    r, alpha, a, b = 0.4, 3.0, 0.9, 2.2
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        for dist, ours in ((BetaGeoDist, bgnbd_loglik), (ModifiedDist, mbgnbd_loglik)):
            theirs = pm.logp(dist.dist(a=a, b=b, r=r, alpha=alpha, T=t), observed).eval()
            np.testing.assert_allclose(ours(np.array([r, alpha, a, b]), x, tx, t)[0], theirs, rtol=1e-7)


def test_compressed_fit_equals_the_per_customer_fit(calibration):
    columns = _purchases(calibration)
    data, weights = compress(columns)
    assert len(weights) < len(calibration) / 2 and weights.sum() == len(calibration)  # one-time buyers collapse
    names = ("r", "alpha", "a", "b")
    one = maximise(bgnbd_loglik, names, data, weights, "BG/NBD")
    each = maximise(bgnbd_loglik, names, columns, np.ones(len(calibration)), "BG/NBD")
    assert one.log_likelihood == pytest.approx(each.log_likelihood, rel=1e-12)
    for name in names:
        assert one.params[name] == pytest.approx(each.params[name], rel=1e-6)


def test_no_interior_maximum_is_an_error():
    # Every customer repeats at the same rate and nobody drops out: the dropout parameters run to the bounds.
    n = 200
    steady = pd.DataFrame({"frequency": np.full(n, 10.0), "recency": np.full(n, 50.0), "t": np.full(n, 50.0)})
    with pytest.raises(BoundaryFitError, match=r"BG/NBD has no interior maximum \(a -> 0\)"):
        BetaGeoNBD.fit(steady)
    late = steady.assign(customer_key=[f"K{i}" for i in range(n)], recency=51.0)
    with pytest.raises(ClvInputError, match=r"MBG/NBD summary: recency greater than t for 200 customer\(s\), "
                                            r"e.g. customer_key='K0'"):
        ModifiedBetaGeoNBD.fit(late)
