"""The backtest through the real stages on a cohort shop: a planted untrue claim is caught and withheld.

The cohort shop (:func:`include.demo.transactions_only.generate_cohort_shop`: every customer acquired
in one quarter, most of them buying once, a season) runs through extract, identity, features,
segmentation, CLV, the backtest, the labeller, the CLV cross-check, publishing and economics on a real
DuckDB file and MLflow store. In the planted copy, every customer who had been silent for half a year
on the backtest date comes back in the horizon with a large order: calling them lapsed and telling them
"deprioritise" or "exclude" was false, the backtest must say so, and the run must not publish those claims.
"""

import datetime as dt
import json

import pandas as pd
import pytest

from include.demo.transactions_only import CURRENCY_CODE, CURRENCY_SYMBOL, generate_cohort_shop
from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from include.stages import stage
from tests.conftest import DATA_END, write_tables

pytestmark = pytest.mark.slow  # two small shops through ten stages: about a minute each

H = 90
BACKTEST_DATE = DATA_END - dt.timedelta(days=H)
#: Without fit_clv: CLV is a witness the labeller and the cross-check do without ("could not check"); on this
#: shop BG/NBD has no interior optimum, and CLV failing soft is issue #25 item 4's (include/clv), not this test's.
STAGES = ("extract_validate", "resolve_identity", "build_features", "segment_customers",
          "backtest_claims", "label_segments", "crosscheck_clv", "publish_segments", "build_economics")
SETTINGS = PipelineSettings(identity_method="exact", n_bootstrap=3, k_min=3, k_max=4, n_init=1,
                            silhouette_sample=500, min_jaccard=0.0, currency_code=CURRENCY_CODE,
                            currency_symbol=CURRENCY_SYMBOL, clv_holdout_days=H)


def planted(tables: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], set[str]]:
    """The shop with every customer silent for 180+ days on the backtest date back for a 400 USD order."""
    orders = tables["raw_orders"]
    ts = pd.to_datetime(orders["order_ts"])
    last = ts[ts < pd.Timestamp(BACKTEST_DATE)].groupby(orders["source_id"]).max()
    silent = last[last < pd.Timestamp(BACKTEST_DATE - dt.timedelta(days=180))].index
    back = pd.DataFrame({"order_id": [f"PLANT{i:07d}" for i in range(len(silent))], "source_system": "shop",
                         "source_id": silent, "amount": 400.0, "channel": "web",
                         "order_ts": (pd.Timestamp(BACKTEST_DATE + dt.timedelta(days=20)) + pd.Timedelta(hours=12))
                         .strftime("%Y-%m-%d %H:%M:%S")})
    return {**tables, "raw_orders": pd.concat([orders, back], ignore_index=True)}, set(silent)


def run_shop(tmp_path_factory, name: str, tables) -> str:
    url = f"duckdb:///{tmp_path_factory.mktemp(name) / 'shop.duckdb'}"
    write_tables(url, tables)
    run = RunInfo(f"test_backtest_{name}", f"{name}-{DATA_END}", DATA_END, SETTINGS, url)
    for task in STAGES:
        stage(task)(run)
    return url


@pytest.fixture(scope="module")
def shops(tmp_path_factory):
    tables = generate_cohort_shop(1200, seed=5, end_date=DATA_END)
    plant, silent = planted(tables)
    return run_shop(tmp_path_factory, "plain", tables), run_shop(tmp_path_factory, "planted", plant), silent


def _read(url: str, sql: str) -> pd.DataFrame:
    with Warehouse(url) as wh:
        return wh.query_df(sql, {"d": DATA_END})


def test_every_claim_has_a_row_on_the_run_and_the_plain_shops_lapsed_claims_hold(shops):
    plain, _, _ = shops
    claims = _read(plain, "SELECT * FROM claims_backtest WHERE as_of_date = :d")
    assert {"value", "lifecycle", "action"} == set(claims["claim_kind"])
    assert (pd.to_datetime(claims["backtest_date"]).dt.date == BACKTEST_DATE).all()
    assert claims["verdict"].isin(["held", "failed", "not checked"]).all() and claims["detail"].notna().all()
    run_wide = claims[(claims["claim"] == "lapsed") & claims["segment_name"].isna()].iloc[0]
    assert run_wide["verdict"] == "held" and run_wide["realised"] <= 0.25
    features = _read(plain, "SELECT COUNT(*) AS n FROM backtest_features WHERE as_of_date = :d")["n"].iloc[0]
    assert features == _read(plain, "SELECT MAX(customers) AS n FROM claims_backtest WHERE as_of_date = :d "
                                    "AND claim = 'lapsed' AND segment_name IS NULL")["n"].iloc[0] / run_wide[
        "customer_share"]


def test_a_planted_untrue_claim_is_caught_and_not_published(shops):
    _, url, silent = shops
    assert len(silent) > 100
    claims = _read(url, "SELECT * FROM claims_backtest WHERE as_of_date = :d")
    failed = claims[claims["verdict"] == "failed"]
    assert {"lapsed", "deprioritise or exclude"} <= set(failed["claim"]), claims[["claim", "verdict", "detail"]]
    both = failed[failed["claim"] == "deprioritise or exclude"].iloc[0]
    assert both["realised"] > 0.10 and str(BACKTEST_DATE) in both["detail"]
    run = _read(url, "SELECT * FROM label_runs WHERE as_of_date = :d").iloc[0]
    withheld = json.loads(run["claims_withheld"])
    assert {"lapsed", "exclude"} <= set(withheld)
    # "deprioritise" stands only if its own customers held little of the later revenue.
    alone = claims[(claims["claim"] == "deprioritise") & (claims["segment_name"] == "deprioritise")]
    assert "deprioritise" in withheld or (len(alone) == 1 and alone["realised"].iloc[0] <= both["bar"])
    assert all(why.startswith(f"withheld: backtest on {BACKTEST_DATE} showed") for why in withheld.values())
    labels = _read(url, "SELECT * FROM segment_labels WHERE as_of_date = :d")
    assert not labels["segment_name"].str.startswith("Lapsed").any(), labels["segment_name"].tolist()
    # The rules say why; the customers' own state is still recorded, but nobody is told to deprioritise.
    priority = _read(url, "SELECT * FROM customer_priority WHERE as_of_date = :d")
    assert not priority["action_claim"].isin(list(withheld)).any()
    assert (priority["lifecycle_state"] == "lapsed").any()
    published = _read(url, "SELECT DISTINCT segment_name FROM customer_segments WHERE as_of_date = :d")
    assert set(published["segment_name"]) == set(labels["segment_name"])
    # No CLV for the date: the names and the cross-check say so, and labelling and publishing went ahead.
    assert run["clv_check"].startswith("could not check: CLV not available")
    check = _read(url, "SELECT * FROM segment_clv_check WHERE as_of_date = :d")
    assert len(check) == labels["segment_id"].nunique() and check["reason"].str.startswith("could not check").all()


def test_the_withheld_claims_are_in_mlflow(shops):
    from include.runtime import tracking

    run_id = tracking.parent_run_id("test_backtest_planted", f"planted-{DATA_END}", DATA_END)
    data = tracking.client().get_run(run_id).data
    assert "lapsed" in data.tags["claims_withheld"] and "exclude" in data.tags["claims_withheld"]
    assert "lapsed" in data.tags["claims_backtest_failed"]
    assert data.metrics["backtest.claims_failed"] >= 2
    artifacts = {a.path for a in tracking.client().list_artifacts(run_id, "backtest")}
    assert "backtest/claims_backtest.csv" in artifacts


def test_a_run_whose_data_do_not_reach_back_writes_not_checked_rows(tmp_path):
    from include.backtest.run import BacktestSettings, backtest_claims

    tables = generate_cohort_shop(300, seed=2, end_date=DATA_END, months=3)  # three months of data only
    url = f"duckdb:///{tmp_path / 'young.duckdb'}"
    write_tables(url, tables)
    run = RunInfo("test_backtest_young", "young", DATA_END, SETTINGS, url)
    for task in STAGES[:4]:
        stage(task)(run)
    with Warehouse(url) as wh:
        out = backtest_claims(wh, DATA_END, BacktestSettings(horizon_days=H, k=3))
        rows = wh.query_df("SELECT * FROM claims_backtest WHERE as_of_date = :d", {"d": DATA_END})
    assert len(rows) and (rows["verdict"] == "not checked").all()
    assert rows["detail"].str.contains("data start on").all() and out.customers == 0
