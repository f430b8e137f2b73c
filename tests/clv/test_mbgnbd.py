"""MBG/NBD against lifetimes and pymc-marketing, one-time buyers, and the per-run model choice."""

import datetime as dt
import tempfile

import numpy as np
import pandas as pd
import pytest

from include.clv.cdnow import HOLDOUT_DAYS, PUBLISHED_BGNBD, cdnow_summaries
from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, ClvInputError, ClvSettings, build_clv_summary, validate_holdout
from include.clv.selection import SELECTION_METRIC, choose_purchase_model
from include.runtime.warehouse import Warehouse
from tests.clv.reference import map_params, purchase_frame, pymc_marketing_map
from tests.clv.simulate import stage_shop, transactions_only_shop

AS_OF = dt.date(2026, 10, 31)


@pytest.fixture(scope="module")
def cdnow_calibration():
    return cdnow_summaries()[1]


@pytest.fixture(scope="module")
def cdnow_choice(cdnow_calibration):
    return choose_purchase_model(cdnow_calibration, HOLDOUT_DAYS / 7)


def shop_calibration(**kwargs) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp, Warehouse(f"duckdb:///{tmp}/w.duckdb") as wh:
        wh.ensure_schema()
        stage_shop(wh, transactions_only_shop(2000, **kwargs), [AS_OF])
        build_clv_summary(wh, AS_OF, ClvSettings(unit_days=7, holdout_days=90))
        return wh.query_df("SELECT * FROM clv_summary WHERE period = 'calibration' ORDER BY customer_key")


def test_mbgnbd_fit_and_predictions_match_lifetimes(cdnow_choice, cdnow_calibration):
    import lifetimes

    mbg = cdnow_choice.fits["mbgnbd"]
    cal = cdnow_calibration
    ref = lifetimes.ModifiedBetaGeoFitter().fit(cal["frequency"], cal["recency"], cal["t"])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(mbg, name) == pytest.approx(ref.params_[name], rel=2e-3), name
    ref.params_ = pd.Series(mbg.params())
    x, tx, t = cal["frequency"], cal["recency"], cal["t"]
    np.testing.assert_allclose(mbg.p_alive(x, tx, t), ref.conditional_probability_alive(x, tx, t), rtol=1e-9)
    np.testing.assert_allclose(mbg.expected_purchases(x, tx, t, 39),
                               ref.conditional_expected_number_of_purchases_up_to_time(39, x, tx, t), rtol=1e-7)


def test_mbgnbd_fit_and_closed_forms_match_pymc_marketing(cdnow_calibration):
    from pymc_marketing.clv import ModifiedBetaGeoModel

    cal = cdnow_calibration.head(400)
    data = purchase_frame(cal)
    model = pymc_marketing_map(ModifiedBetaGeoModel, data, ("r", "alpha", "a", "b"))
    theirs = map_params(model, ("r", "alpha", "a", "b"))
    fitted = ModifiedBetaGeoNBD.fit(cal)  # the pipeline's SciPy fit of the same likelihood
    for name, value in theirs.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=1e-3), name
    ours = ModifiedBetaGeoNBD(**theirs)
    theirs_alive = model.expected_probability_alive().values.ravel()
    theirs_purchases = model.expected_purchases(future_t=39).values.ravel()
    np.testing.assert_allclose(ours.p_alive(data["frequency"], data["recency"], data["T"]), theirs_alive, rtol=1e-9)
    np.testing.assert_allclose(ours.expected_purchases(data["frequency"], data["recency"], data["T"], 39),
                               theirs_purchases, rtol=1e-7)


def test_one_time_buyer_unseen_for_a_year_is_probably_inactive(cdnow_choice):
    mbg, bg = cdnow_choice.fits["mbgnbd"], cdnow_choice.fits["bgnbd"]
    weeks = np.array([4.0, 26.0, 52.0, 78.0])
    alive = mbg.p_alive(np.zeros(4), np.zeros(4), weeks)
    assert alive[2] < 0.5  # a year (52 weeks) since the only purchase
    assert np.all(np.diff(alive) < 0)  # the longer the silence, the less likely alive
    # BG/NBD cannot say so: without a repeat purchase P(alive) is 1 by construction.
    np.testing.assert_array_equal(bg.p_alive(np.zeros(4), np.zeros(4), weeks), 1.0)
    # Frequent buyers do not overflow the closed forms.
    big = mbg.p_alive([400.0], [100.0], [101.0])
    assert np.isfinite(big).all() and 0 < big[0] <= 1
    assert np.isfinite(mbg.expected_purchases([400.0], [100.0], [101.0], 52)).all()


def test_cdnow_bgnbd_parameters_are_still_reproduced(cdnow_choice):
    bg = cdnow_choice.fits["bgnbd"]
    for name, value in PUBLISHED_BGNBD.items():
        assert getattr(bg, name) == pytest.approx(value, abs=6e-4), name


def _assert_choice_is_the_lower_error(choice, calibration):
    errors = {k: m[SELECTION_METRIC] for k, (m, _) in choice.validations.items()}
    assert set(errors) == {"bgnbd", "mbgnbd"} and not choice.failures
    assert choice.chosen == min(errors, key=errors.get)
    for key, fit in choice.fits.items():  # the metrics are those of the stored fits
        assert validate_holdout(fit, calibration, 90 / 7)[0][SELECTION_METRIC] == pytest.approx(errors[key])
    return errors


def test_model_choice_follows_the_holdout_error():
    # Many one-time buyers who drop out at once (the MBG/NBD process): MBG/NBD predicts the holdout better.
    mbg_shop = shop_calibration(seed=7)
    choice = choose_purchase_model(mbg_shop, 90 / 7)
    errors = _assert_choice_is_the_lower_error(choice, mbg_shop)
    assert choice.chosen == "mbgnbd" and errors["mbgnbd"] < errors["bgnbd"]
    # Customers drop out only after repeat purchases (the BG/NBD process): BG/NBD does.
    bg_shop = shop_calibration(seed=7, first_purchase_dropout=False, params={"a": 0.8, "b": 2.5})
    choice = choose_purchase_model(bg_shop, 90 / 7)
    errors = _assert_choice_is_the_lower_error(choice, bg_shop)
    assert choice.chosen == "bgnbd" and errors["bgnbd"] < errors["mbgnbd"]


def test_model_choice_input_errors_are_clear():
    one_order = pd.DataFrame({"frequency": [0.0] * 20, "recency": [0.0] * 20, "t": [10.0] * 20,
                              "holdout_purchases": [0.0] * 20})
    with pytest.raises(ClvInputError, match="BG/NBD summary: needs at least 10 customers, 2 of them with repeat"):
        choose_purchase_model(one_order, 12)
    with pytest.raises(ClvInputError, match="MBG/NBD summary: recency greater than t"):
        ModifiedBetaGeoNBD.fit(one_order.assign(recency=20.0))
    assert BetaGeoNBD.KEY != ModifiedBetaGeoNBD.KEY
