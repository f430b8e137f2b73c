"""CLV: SQL summaries, maximum-likelihood fits against pymc-marketing, lifetimes and the published CDNOW estimates."""


import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.clv.cdnow import PUBLISHED_BGNBD, cdnow_path, cdnow_summaries
from include.clv.models import (
    BetaGeoNBD,
    ClvInputError,
    ClvSettings,
    GammaGammaSpend,
    build_clv_summary,
    crosscheck_segments,
    customer_lifetime_value,
    score_customers,
    validate_holdout,
)
from include.extract.validate import extract_and_validate
from include.identity.resolve import resolve_identities
from include.runtime.warehouse import Warehouse
from tests.clv.reference import map_params, purchase_frame, pymc_marketing_map
from tests.handbuilt import AS_OF, raw_tables


@pytest.fixture(scope="module")
def cdnow():
    return cdnow_summaries()


def summaries(tmp_path, unit_days, holdout_days, extra_orders=None):
    tables = raw_tables()
    if extra_orders is not None:
        tables["raw_orders"] = pd.concat([tables["raw_orders"], extra_orders], ignore_index=True)
    with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        for name, frame in tables.items():
            wh.replace_table(name, frame)
        extract_and_validate(wh, AS_OF, max_bad_share=1.0)
        resolve_identities(wh, AS_OF)
        build_clv_summary(wh, AS_OF, ClvSettings(unit_days=unit_days, holdout_days=holdout_days))
        key = wh.query_df("SELECT customer_key FROM identity_map WHERE source_id = 'W1'")["customer_key"][0]
        out = wh.query_df("SELECT * FROM clv_summary WHERE customer_key = :k", {"k": key})
    return out.set_index("period")


def test_summary_statistics_follow_the_bgnbd_definitions(tmp_path):
    # Ann: orders on 2024-06-01 (20), 2025-12-01 (100), 2026-01-10 (50 - 25 returned), 2026-01-20 (30),
    # plus a second order on 2026-01-20 (10) that merges into the same transaction day.
    same_day = raw_tables()["raw_orders"].iloc[[3]].assign(order_id="o8", source_system="web", source_id="W1",
                                                          amount="10")
    s = summaries(tmp_path, unit_days=1, holdout_days=30, extra_orders=same_day)
    full, calib = s.loc["full"], s.loc["calibration"]
    assert full["frequency"] == 3 and full["recency"] == 598 and full["t"] == 609
    assert full["monetary_value"] == pytest.approx((100 + 25 + 40) / 3)
    assert full["holdout_purchases"] == 0
    # Calibration ends 2026-01-01: two transaction days before it, two after.
    assert calib["frequency"] == 1 and calib["recency"] == 548 and calib["t"] == 579
    assert calib["monetary_value"] == pytest.approx(100) and calib["holdout_purchases"] == 2


def test_summary_in_weeks(tmp_path):
    full = summaries(tmp_path, unit_days=7, holdout_days=30).loc["full"]
    assert full["recency"] == pytest.approx(598 / 7) and full["t"] == pytest.approx(609 / 7)


def test_sql_summary_reproduces_the_published_cdnow_summary(cdnow):
    full, calibration = cdnow
    published = pd.read_csv(cdnow_path("cdnow_customers_summary.csv"))
    calibration = calibration.assign(id=calibration["customer_key"].astype(int)).set_index("id").sort_index()
    published = published.set_index("ID").sort_index()
    assert len(calibration) == len(published) == 2357
    assert (calibration["frequency"].to_numpy() == published["frequency"].to_numpy()).all()
    np.testing.assert_allclose(calibration["recency"], published["recency"], atol=0.006)
    np.testing.assert_allclose(calibration["t"], published["T"], atol=0.006)


def test_bgnbd_reproduces_the_published_cdnow_estimates(cdnow):
    _, calibration = cdnow
    bg = BetaGeoNBD.fit(calibration)
    for name, value in PUBLISHED_BGNBD.items():
        assert getattr(bg, name) == pytest.approx(value, abs=6e-4), name


def test_fits_and_predictions_match_lifetimes(cdnow):
    import lifetimes

    full, calibration = cdnow
    bg = BetaGeoNBD.fit(calibration)
    ref = lifetimes.BetaGeoFitter().fit(calibration["frequency"], calibration["recency"], calibration["t"])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(ref.params_[name], rel=2e-3), name
    # Predictions from the same parameters agree to rounding.
    ref.params_ = pd.Series(bg.params())
    x, tx, t = calibration["frequency"], calibration["recency"], calibration["t"]
    np.testing.assert_allclose(bg.p_alive(x, tx, t), ref.conditional_probability_alive(x, tx, t), rtol=1e-9)
    np.testing.assert_allclose(bg.expected_purchases(x, tx, t, 39),
                               ref.conditional_expected_number_of_purchases_up_to_time(39, x, tx, t), rtol=1e-7)
    gg, counts = GammaGammaSpend.fit(calibration)
    rep = calibration[(calibration["frequency"] > 0) & (calibration["monetary_value"] > 0)]
    gref = lifetimes.GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"])
    for name in ("p", "q", "v"):
        assert getattr(gg, name) == pytest.approx(gref.params_[name], rel=2e-3), name
    assert counts["gg_customers"] == len(rep)
    gref.params_ = pd.Series(gg.params())
    np.testing.assert_allclose(gg.expected_spend(rep["frequency"], rep["monetary_value"]),
                               gref.conditional_expected_average_profit(rep["frequency"], rep["monetary_value"]),
                               rtol=1e-9)


def test_fits_match_pymc_marketing(cdnow):
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    _, calibration = cdnow
    cal = calibration.head(400)
    theirs = map_params(pymc_marketing_map(BetaGeoModel, purchase_frame(cal), ("r", "alpha", "a", "b")),
                        ("r", "alpha", "a", "b"))
    bg = BetaGeoNBD.fit(cal)
    for name, value in theirs.items():
        assert getattr(bg, name) == pytest.approx(value, rel=1e-3), name
    rep = cal[(cal["frequency"] > 0) & (cal["monetary_value"] > 0)]
    spend = pd.DataFrame({"customer_id": np.arange(len(rep)), "frequency": rep["frequency"].to_numpy(),
                          "monetary_value": rep["monetary_value"].to_numpy()})
    theirs = map_params(pymc_marketing_map(GammaGammaModel, spend, ("p", "q", "v")), ("p", "q", "v"))
    gg, _ = GammaGammaSpend.fit(cal)
    for name, value in theirs.items():
        assert getattr(gg, name) == pytest.approx(value, rel=1e-3), name


def test_clv_matches_lifetimes_monthly_sum(cdnow):
    import lifetimes

    _, calibration = cdnow
    daily = calibration.assign(recency=calibration["recency"] * 7, t=calibration["t"] * 7)
    bg = BetaGeoNBD.fit(daily)
    spend = np.full(len(daily), 35.0)
    ours = customer_lifetime_value(bg, spend, daily, 12, unit_days=1, monthly_discount=0.01, margin=1.0)
    ref = lifetimes.BetaGeoFitter()
    ref.params_ = pd.Series(bg.params())
    expected = np.zeros(len(daily))
    prev = np.zeros(len(daily))
    for m in range(1, 13):  # lifetimes' _customer_lifetime_value loop, 30-day months
        cur = ref.conditional_expected_number_of_purchases_up_to_time(m * 30, daily["frequency"], daily["recency"],
                                                                     daily["t"])
        expected += (cur - prev) * 35.0 / 1.01 ** m
        prev = cur
    np.testing.assert_allclose(ours, np.clip(expected, 0, None), rtol=1e-7)


def test_scores_are_complete_and_non_negative(cdnow):
    full, calibration = cdnow
    bg = BetaGeoNBD.fit(full)
    gg, _ = GammaGammaSpend.fit(full)
    scores = score_customers(bg, gg, full, ClvSettings(unit_days=7))
    assert len(scores) == len(full)
    assert (scores["clv_model"] == "BG/NBD").all()
    numeric = scores.drop(columns=["customer_key", "clv_model"])
    assert not numeric.isna().any().any() and (numeric >= 0).all().all()
    assert (scores["p_alive"] <= 1).all()
    assert (scores["clv_365d"] >= scores["clv_90d"]).all()
    assert (scores["clv_365d_low"] <= scores["clv_365d"] + 1e-9).all()
    assert (scores["clv_365d_high"] >= scores["clv_365d"] - 1e-9).all()
    metrics, table = validate_holdout(BetaGeoNBD.fit(calibration), calibration, 39)
    assert abs(metrics["holdout_aggregate_error_pct"]) < 20
    assert table["customers"].sum() == len(calibration)


def test_edge_cases_give_clear_errors():
    one_order = pd.DataFrame({"frequency": [0.0] * 20, "recency": [0.0] * 20, "t": [10.0] * 20,
                              "monetary_value": [0.0] * 20})
    with pytest.raises(ClvInputError, match="repeat purchases"):
        BetaGeoNBD.fit(one_order)
    with pytest.raises(ClvInputError, match="Gamma-Gamma needs"):
        GammaGammaSpend.fit(one_order)
    bad = one_order.assign(recency=20.0)
    with pytest.raises(ClvInputError, match="recency greater than t"):
        BetaGeoNBD.fit(bad)
    with pytest.raises(ClvInputError, match="missing column"):
        BetaGeoNBD.fit(one_order.drop(columns="t"))
    with pytest.raises(ClvInputError, match="NaN"):
        BetaGeoNBD.fit(one_order.assign(t=np.nan))


def test_crosscheck_flags_names_that_clv_contradicts():
    profiles = pd.DataFrame({"segment_id": [1, 2, 3, 4], "segment_name": ["High-value core", "Big spenders",
                                                                          "Hibernating", "Occasional"],
                             "customers": [10, 20, 30, 40], "monetary": [900.0, 500.0, 10.0, 100.0]})
    clv = pd.DataFrame({"segment_id": [1, 2, 3, 4], "mean_clv_365d": [800.0, 50.0, 600.0, 100.0],
                        "total_clv_365d": [1.0] * 4, "mean_clv_365d_low": [0.0] * 4, "mean_clv_365d_high": [1.0] * 4,
                        "mean_p_alive": [0.5] * 4})
    check, spearman = crosscheck_segments(profiles, clv)
    flagged = dict(zip(check["segment_name"], check["flag"], strict=True))
    assert flagged == {"High-value core": False, "Big spenders": True, "Hibernating": True, "Occasional": False}
    assert "below the segments' median" in check.loc[check["segment_id"] == 2, "reason"].iloc[0]
    assert -1 <= spearman < 1
    _, aligned = crosscheck_segments(profiles, clv.assign(mean_clv_365d=[900.0, 500.0, 10.0, 100.0]))
    assert aligned == pytest.approx(1.0)


def test_registered_champion_scores_like_the_fit(cdnow, tmp_path, monkeypatch):
    """The champion for a date is the latest accepted fit on or before it, whatever order the dates ran in."""
    import mlflow

    # Its own MLflow store: fits other tests registered in the session's store (dated 2026) would hold the alias.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    from include.clv.mbgnbd import ModifiedBetaGeoNBD
    from include.clv.registry import (
        AS_OF_TAG,
        CHAMPION,
        GAMMA_GAMMA_MODEL_NAME,
        PURCHASE_MODEL_NAME,
        champion_versions,
        load_champions,
        register_models,
    )
    from include.runtime import tracking

    full, _ = cdnow
    june, july, march = dt.date(1998, 6, 30), dt.date(1998, 7, 31), dt.date(1998, 3, 31)
    bg = BetaGeoNBD(r=0.243, alpha=4.414, a=0.793, b=2.426)
    gg = GammaGammaSpend(p=6.25, q=3.74, v=15.44)
    parent = tracking.parent_run_id("test_clv_registry", "run-1", june)
    versions = register_models(parent, bg, gg, full, unit_days=7, as_of_date=june, champion=True)
    assert set(versions) == {"clv_purchases", "clv_gamma_gamma"}
    champion = tracking.client().get_model_version_by_alias(PURCHASE_MODEL_NAME, CHAMPION)
    assert str(champion.version) == versions[PURCHASE_MODEL_NAME] and champion.tags[AS_OF_TAG] == "1998-06-30"
    loaded = load_champions(june)
    assert isinstance(loaded.purchases, BetaGeoNBD) and loaded.purchases.params() == bg.params()
    assert loaded.spend.params() == gg.params() and loaded.unit_days == 7
    assert loaded.as_of_date == june and loaded.versions == versions
    model = mlflow.pyfunc.load_model(f"models:/{PURCHASE_MODEL_NAME}@{CHAMPION}")
    assert [i.name for i in model.metadata.get_input_schema().inputs] == ["frequency", "recency", "t"]
    out = model.predict(full[["frequency", "recency", "t"]].astype(float).head(50))
    np.testing.assert_allclose(out["p_alive"], bg.p_alive(full["frequency"][:50], full["recency"][:50], full["t"][:50]))
    # A later fit that fails validation is registered but is no champion, for its date or later ones.
    versions2 = register_models(parent, bg, gg, full, unit_days=7, as_of_date=july, champion=False)
    assert int(versions2[PURCHASE_MODEL_NAME]) > int(versions[PURCHASE_MODEL_NAME])
    assert tracking.client().get_model_version_by_alias(PURCHASE_MODEL_NAME, CHAMPION).version == champion.version
    assert champion_versions(july) == (june, versions)
    # A backfill of March, registered last, chooses MBG/NBD: it is the champion for March to June 29 only,
    # and does not take the alias from June's fit; the spend model comes from the same fit.
    mbg = ModifiedBetaGeoNBD(r=0.525, alpha=6.183, a=0.891, b=1.614)
    gg_march = GammaGammaSpend(p=5.0, q=3.0, v=12.0)
    versions3 = register_models(parent, mbg, gg_march, full, unit_days=7, as_of_date=march, champion=True)
    loaded = load_champions(dt.date(1998, 6, 29))
    assert isinstance(loaded.purchases, ModifiedBetaGeoNBD) and loaded.purchases.params() == mbg.params()
    assert loaded.spend.params() == gg_march.params() and loaded.as_of_date == march
    assert loaded.versions == versions3 and loaded.purchases.p_alive(0, 0, 52) < 0.5
    assert champion_versions(march) == (march, versions3)
    assert champion_versions(june) == champion_versions(dt.date(1998, 12, 31)) == (june, versions)
    alias = tracking.client().get_model_version_by_alias(PURCHASE_MODEL_NAME, CHAMPION)
    assert str(alias.version) != versions3[PURCHASE_MODEL_NAME]
    assert str(tracking.client().get_model_version_by_alias(GAMMA_GAMMA_MODEL_NAME, CHAMPION).version) \
        != versions3[GAMMA_GAMMA_MODEL_NAME]
    with pytest.raises(LookupError, match="on or before 1990-01-01"):
        champion_versions(dt.date(1990, 1, 1))


def test_poisson_band_is_scipys_poisson_quantile():
    from scipy import stats

    from include.clv.models import poisson_band

    expected = np.concatenate([[0.0, 1e-9, 0.1053605, 1.0, 2.302585], np.random.default_rng(3).gamma(0.5, 8.0, 5000)])
    value = np.random.default_rng(4).gamma(2.0, 30.0, len(expected))
    low, high = poisson_band(expected, value)
    mean = np.maximum(expected, 1e-12)
    np.testing.assert_array_equal(low, stats.poisson.ppf(0.1, mean) * value)
    np.testing.assert_array_equal(high, stats.poisson.ppf(0.9, mean) * value)


def test_fit_sample_depends_only_on_the_keys_and_the_seed(cdnow):
    from include.clv.models import fit_sample

    full, _ = cdnow
    sample = fit_sample(full, 1000, seed=42)
    assert len(sample) == 1000 and sample.index.is_monotonic_increasing  # rows keep their order
    shuffled = full.sample(frac=1.0, random_state=1)
    assert set(fit_sample(shuffled, 1000, seed=42)["customer_key"]) == set(sample["customer_key"])
    assert set(fit_sample(full, 1000, seed=7)["customer_key"]) != set(sample["customer_key"])
    assert fit_sample(full, len(full), seed=42) is full
    # Fitted on 1,000 of 2,357 customers, the model predicts everyone's next year within a few percent
    # (seeds 1-7 and 42: -0.9% to +4.8%); docs/benchmarks.md measures 50,000 of 480,000.
    x, tx, t = full["frequency"], full["recency"], full["t"]
    whole = BetaGeoNBD.fit(full).expected_purchases(x, tx, t, 52).sum()
    assert BetaGeoNBD.fit(sample).expected_purchases(x, tx, t, 52).sum() == pytest.approx(whole, rel=0.03)
