"""Issue #14 on a transactions-only shop (USD, orders only, many one-time buyers), through the real stages.

fit_clv and build_economics run as the DAG runs them (real DuckDB file, real
MLflow store) for two weekly dates; segments are assigned by a fixed rule in
the test because segmentation is not under test here.
"""

import datetime as dt

import pandas as pd
import pytest

from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from tests.clv.simulate import stage_shop, transactions_only_shop

DATES = [dt.date(2026, 10, 24), dt.date(2026, 10, 31)]
NAMES = {1: "Recent repeaters", 2: "One-time buyers", 3: "Lapsed repeaters"}


def _rule_segments(orders: pd.DataFrame, date: dt.date) -> pd.DataFrame:
    seen = orders[orders["order_ts"] < pd.Timestamp(date + dt.timedelta(days=1))]
    per = seen.groupby("source_id").agg(n=("order_id", "size"), last=("order_ts", "max"))
    recent = per["last"] >= pd.Timestamp(date - dt.timedelta(days=180))
    seg = (per["n"] == 1) * 2 + ((per["n"] > 1) & recent) * 1 + ((per["n"] > 1) & ~recent) * 3
    return pd.DataFrame({"as_of_date": date, "customer_key": per.index, "segment_id": seg.to_numpy(),
                         "segment_name": seg.map(NAMES).to_numpy(), "model_run_id": "rule",
                         "raw_segment_id": seg.to_numpy()})


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    from include.stages.clv import fit_clv
    from include.stages.economics import build_economics

    url = f"duckdb:///{tmp_path_factory.mktemp('shop') / 'warehouse.duckdb'}"
    tables = transactions_only_shop(2000, seed=7, end=DATES[-1])
    orders = tables["raw_orders"].assign(order_ts=lambda f: pd.to_datetime(f["order_ts"]))
    # 2,000 customers, fitted on a seeded sample of 1,000 (validated and scored: all).
    settings = PipelineSettings(currency_code="USD", currency_symbol="$", clv_fit_sample_size=1000)
    with Warehouse(url) as wh:
        wh.ensure_schema()
        stage_shop(wh, tables, DATES)
        for date in DATES:
            wh.replace_partition("customer_segments", _rule_segments(orders, date), {"as_of_date": date})
    runs = {d: RunInfo("test_transactions_only", f"run-{d}", d, settings, url) for d in DATES}
    clv_result = fit_clv(runs[DATES[-1]])
    figures = {d: build_economics(runs[d]) for d in DATES}
    return url, orders, runs, clv_result, figures


def test_chosen_model_scores_one_time_buyers_as_likely_gone(shop_run):
    url, orders, runs, clv_result, figures = shop_run
    as_of = DATES[-1]
    assert clv_result["clv_model"] == "MBG/NBD"
    with Warehouse(url) as wh:
        clv = wh.query_df("SELECT * FROM customer_clv WHERE as_of_date = :d", {"d": as_of})
        prio = wh.query_df("SELECT customer_key, churn_risk FROM customer_priority WHERE as_of_date = :d",
                           {"d": as_of}).set_index("customer_key")["churn_risk"]
    assert (clv["clv_model"] == "MBG/NBD").all()
    per = orders.groupby("source_id").agg(n=("order_id", "size"), last=("order_ts", "max"))
    gone = per[(per["n"] == 1) & (per["last"] < pd.Timestamp(as_of - dt.timedelta(days=365)))].index
    assert len(gone) > 50
    assert (prio.loc[gone] > 0.5).all(), prio.loc[gone].describe()
    # Recent repeat buyers are not all written off.
    recent = per[(per["n"] >= 3) & (per["last"] >= pd.Timestamp(as_of - dt.timedelta(days=30)))].index
    assert prio.loc[recent].median() < 0.5


def test_both_purchase_models_are_logged_to_mlflow(shop_run):
    from include.runtime import tracking

    _, _, runs, _, _ = shop_run
    run = tracking.client().get_run(runs[DATES[-1]].mlflow_run())
    metrics = run.data.metrics
    for key in ("bgnbd", "mbgnbd"):
        assert f"clv.{key}.holdout_mae" in metrics and f"clv.{key}.calibration_r" in metrics
    assert metrics["clv.mbgnbd.chosen"] == 1.0 and metrics["clv.bgnbd.chosen"] == 0.0
    assert metrics["clv.fit_customers"] == 1000 and metrics["clv.clv_customers"] == 2000
    assert run.data.params["clv.fit_sample_size"] == "1000"
    assert {"clv.seconds.summary", "clv.seconds.fit", "clv.seconds.score"} <= set(metrics)
    assert metrics["clv.mbgnbd.holdout_mae"] < metrics["clv.bgnbd.holdout_mae"]
    assert run.data.tags["clv_model"] == "MBG/NBD"
    assert metrics["clv.one_time_buyer_share"] > 0.3


def test_no_invented_costs_and_the_right_currency(shop_run, monkeypatch, capsys):
    url, _, runs, _, figures = shop_run
    with Warehouse(url) as wh:
        seg = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", {"d": DATES[-1]})
        per = wh.query_df("SELECT * FROM customer_economics WHERE as_of_date = :d", {"d": DATES[-1]})
        curve = wh.scalar("SELECT COUNT(*) FROM profit_concentration WHERE as_of_date = :d", {"d": DATES[-1]})
    assert not seg["cost_known"].any()
    assert seg[["cost_to_serve", "profit", "profit_per_customer", "profit_share"]].isna().all().all()
    assert per[["support_cost", "servicing_cost", "cost_to_serve", "profit"]].isna().all().all()
    assert (seg["revenue"] > 0).all() and curve == 0
    assert (seg["currency_code"] == "USD").all() and (seg["currency_symbol"] == "$").all()
    fig = figures[DATES[-1]]
    assert fig["cost_known"] is False and fig["profit"] is None and fig["loss_making_segments"] is None

    from include.report.summary import main

    monkeypatch.setenv("WAREHOUSE_URL", url)
    main()
    out = capsys.readouterr().out
    assert "Segment economics (published labels, last 12 months, USD; assumed 35% gross margin: set gross_margin)" \
        in out and "$" in out and "£" not in out
    assert "unknown" in out and "lose money" not in out


def test_retention_means_customers_buying_again(shop_run):
    url, orders, _, _, _ = shop_run
    as_of, w = DATES[-1], PipelineSettings().retention_window_days
    with Warehouse(url) as wh:
        seg = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", {"d": as_of})
        segments = wh.query_df("SELECT customer_key, segment_id FROM customer_segments WHERE as_of_date = :d",
                               {"d": as_of})
    seg = seg.set_index("segment_id")
    # The same figure from the raw orders, by hand.
    cutoff = pd.Timestamp(as_of + dt.timedelta(days=1))
    now = set(orders.loc[orders["order_ts"].between(cutoff - pd.Timedelta(days=w), cutoff, inclusive="left"),
                         "source_id"])
    before = set(orders.loc[orders["order_ts"].between(cutoff - pd.Timedelta(days=2 * w),
                                                       cutoff - pd.Timedelta(days=w), inclusive="left"), "source_id"])
    for sid, members in segments.groupby("segment_id")["customer_key"]:
        base = set(members) & before
        assert seg.loc[sid, "retention_base"] == len(base)
        if base:
            assert seg.loc[sid, "repeat_retention"] == pytest.approx(len(base & now) / len(base))
        else:
            assert pd.isna(seg.loc[sid, "repeat_retention"])
    # Non-trivial: repeat buyers neither all stay nor all go, and it is not the label stability.
    recent = seg.loc[1]
    assert 0.05 < recent["repeat_retention"] < 0.95
    assert recent["label_stability"] > 0.9 and recent["repeat_retention"] < recent["label_stability"] - 0.05
    assert seg.loc[2, "retention_base"] == 0 or seg.loc[2, "repeat_retention"] == 0  # one order: nothing again
    # The CLV model's view: fewer one-time buyers than recent repeaters are likely still customers.
    assert 0 < seg.loc[2, "alive_share"] < seg.loc[1, "alive_share"]


def test_a_backfill_with_the_champion_never_scores_with_a_later_fit(shop_run, tmp_path, monkeypatch):
    """``clv_use_champion`` for a date before the only accepted fit fails, and writes nothing."""
    import dataclasses

    from include.clv.models import BetaGeoNBD, GammaGammaSpend
    from include.clv.registry import register_models
    from include.runtime import tracking
    from include.stages.clv import fit_clv

    url, _, runs, _, _ = shop_run
    # Its own MLflow store: other tests' fits in the session's store could be dated on or before DATES[0].
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    later = tracking.parent_run_id("test_transactions_only", f"later-{DATES[-1]}", DATES[-1])
    summary = pd.DataFrame({"frequency": [0.0, 2.0, 5.0], "recency": [0.0, 20.0, 40.0], "t": [50.0, 50.0, 60.0],
                            "monetary_value": [0.0, 30.0, 45.0]})
    register_models(later, BetaGeoNBD(r=0.5, alpha=5.0, a=0.8, b=2.5), GammaGammaSpend(p=6.0, q=3.5, v=15.0),
                    summary, unit_days=7, as_of_date=DATES[-1], champion=True)
    settings = dataclasses.replace(runs[DATES[0]].settings, clv_use_champion=True)
    with pytest.raises(LookupError, match=f"on or before {DATES[0]}"):
        fit_clv(RunInfo("test_transactions_only", f"champion-{DATES[0]}", DATES[0], settings, url))
    with Warehouse(url) as wh:
        assert wh.scalar("SELECT COUNT(*) FROM customer_clv WHERE as_of_date = :d", {"d": DATES[0]}) == 0
