"""Issue #14's acceptance runs: a transactions-only shop and the demo, through the stages, for two weekly dates.

The shop (RFM only, US dollars, mostly one-time buyers, many lapsed) must get
unique names, no lapsed segment named or treated as valuable, its seven empty
features reported as not available; the demo with a failing gate must say so
at the top of its report.
"""


import json
import re

import pandas as pd
import pytest

from include.demo.transactions_only import CURRENCY_CODE, CURRENCY_SYMBOL, generate_transactions_only
from include.report.html import load_report_data, report_path
from include.runtime.paths import reports_dir
from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from include.stages import stage
from tests.conftest import AS_OF, DATA_END, copy_duckdb, write_tables

pytestmark = pytest.mark.slow  # two weekly dates through every stage, twice: about 7 minutes on 2 cores

DATES = (AS_OF, DATA_END)
#: The DAG's order: the labeller (after the fit, CLV and the backtest) and the CLV cross-check before publishing.
DAG_ORDER = ("extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv",
             "backtest_claims", "label_segments", "crosscheck_clv", "publish_segments", "track_migration",
             "build_economics", "render_report")
SMALL = dict(identity_method="exact", n_bootstrap=4, k_min=3, k_max=6, n_init=2, silhouette_sample=1500)


def _run(url: str, dag_id: str, order, settings_by_date) -> None:
    # One dag_id per fixture: both fixtures may run in one worker against one MLflow store, and a
    # shared dag_id would make them share one parent run (first writer's params win).
    for date in DATES:
        run = RunInfo(dag_id, f"run-{date}", date, settings_by_date(date), url)
        for name in order:
            stage(name)(run)


def _names_in_report(page: str) -> list[str]:
    named = re.search(r"<h2>How segments were named \(model fit\)</h2>(.*?)</section>", page, flags=re.S).group(1)
    return re.findall(r"<tr><td class=\"\">(.*?)</td>", named)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    url = f"duckdb:///{tmp_path_factory.mktemp('shop') / 'shop.duckdb'}"
    write_tables(url, generate_transactions_only(2000, seed=3, end_date=DATA_END))
    settings = PipelineSettings(**SMALL, currency_code=CURRENCY_CODE, currency_symbol=CURRENCY_SYMBOL)
    _run(url, "test_names_shop", DAG_ORDER, lambda _: settings)
    return url


def test_shop_names_are_unique_and_lapsed_segments_are_not_valuable(shop):
    with Warehouse(shop) as wh:
        for date in DATES:
            profiles = wh.query_df("SELECT * FROM segment_labels WHERE as_of_date = :d", {"d": date})
            profiles = profiles.drop_duplicates("segment_id")
            names = profiles["segment_name"].tolist()
            assert len(names) >= 3 and len(set(names)) == len(names), names
            assert not any(re.search(r"\s\d+$", n) for n in names), names
            standings = {r.segment_id: json.loads(r.standing) for r in profiles.itertuples()}
            lapsed = [s for s, st in standings.items() if st["recency"] == "lapsed"]
            assert lapsed, "the shop has lapsed one-time buyers; some segment must say so"
            for r in profiles[profiles["segment_id"].isin(lapsed)].itertuples():
                assert r.value_standing not in ("top", "high") and "value" not in r.segment_name.lower()
                assert r.segment_name.startswith("Lapsed"), r.segment_name
            priority = wh.query_df("SELECT segment_id, lifecycle_state, value_tier, action, priority, COUNT(*) AS n "
                                   "FROM customer_priority WHERE as_of_date = :d GROUP BY ALL", {"d": date})
            # Actions follow each customer's own state: the lapsed ones (of any segment) are never treated as
            # valuable; the few active members of a lapsed segment are not deprioritised with it.
            treated = priority[priority["lifecycle_state"] == "lapsed"]
            assert len(treated) and set(treated["value_tier"]) <= {"dormant", "low"}
            assert not treated["action"].str.contains("account", case=False).any()
            assert not (treated["priority"] == "critical").any()
            buying = priority[priority["lifecycle_state"].isin(["new", "active"])]
            assert not buying["action"].str.contains("deprioritise|exclude", case=False).any()
            in_lapsed = priority[priority["segment_id"].isin(lapsed)]
            assert in_lapsed.loc[in_lapsed["lifecycle_state"] == "lapsed", "n"].sum() >= 0.75 * in_lapsed["n"].sum()
            run = wh.query_df("SELECT features_unavailable FROM segmentation_runs WHERE as_of_date = :d", {"d": date})
            assert set(json.loads(run["features_unavailable"].iloc[0])) == {
                "discount_share", "return_rate", "support_contacts", "cost_to_serve", "usage_sessions",
                "email_open_rate", "email_click_rate"}
        data = load_report_data(wh, DATA_END)
    assert list(data["snake"].columns) == ["recency_days", "frequency", "monetary", "avg_order_value", "tenure_days"]
    page = report_path(reports_dir(), DATA_END).read_text()
    names = _names_in_report(page)
    assert len(names) >= 3 and len(set(names)) == len(names)
    assert "money in USD" in page and "$" in page and "£" not in page
    assert "Not available this run" in page and "Support cost" in page
    assert "discount spend" not in page and "Discount spend: not available" in page
    assert 'class="banner"' not in page  # nothing held back in this run


def test_shop_features_not_available_are_in_mlflow(shop):
    from include.runtime import tracking

    run_id = tracking.parent_run_id("test_names_shop", f"run-{DATA_END}", DATA_END)
    params = tracking.client().get_run(run_id).data.params
    assert "cost_to_serve" in params["features_not_available"]
    assert "cost_to_serve" not in params["features_used"] and "monetary" in params["features_used"]


@pytest.fixture(scope="module")
def demo_with_failed_gate(tmp_path_factory, demo_warehouse_file):
    url = copy_duckdb(demo_warehouse_file, tmp_path_factory.mktemp("demo") / "demo.duckdb")
    # The last week's gate cannot pass (no segment reaches Jaccard 1.01): its labels are held back.
    _run(url, "test_names_demo", DAG_ORDER, lambda d: PipelineSettings(**SMALL, min_jaccard=1.01 if d == DATA_END else 0.0))
    return url


def test_demo_report_has_unique_names_and_a_gate_banner(demo_with_failed_gate):
    page = report_path(reports_dir(), DATA_END).read_text()
    banner = re.search(r'<div class="banner" role="alert">(.*?)</div>', page, flags=re.S)
    assert banner and "Quality gate failed" in banner.group(1) and f"published on {AS_OF}" in banner.group(1)
    names = _names_in_report(page)
    assert len(names) >= 3 and len(set(names)) == len(names), names
    with Warehouse(demo_with_failed_gate) as wh:
        run = wh.query_df("SELECT * FROM segmentation_runs WHERE as_of_date = :d", {"d": DATA_END}).iloc[0]
        this_week = wh.query_df("SELECT l.segment_name, p.jaccard FROM segment_profiles p JOIN segment_labels l "
                                "ON l.as_of_date = p.as_of_date AND l.fit_segment = p.fit_segment "
                                "WHERE p.as_of_date = :d", {"d": DATA_END})
        published = wh.query_df("SELECT DISTINCT segment_name FROM customer_segments WHERE as_of_date = :d",
                                {"d": AS_OF})
        check = wh.query_df("SELECT segment_name FROM segment_clv_check WHERE as_of_date = :d", {"d": AS_OF})
        label_run = wh.query_df("SELECT * FROM label_runs WHERE as_of_date = :d", {"d": DATA_END}).iloc[0]
    assert not run["gate_passed"]  # the fit's stability half of the gate
    assert not label_run["gate_passed"] and not label_run["stability_passed"]
    assert label_run["gate_reason"].startswith("stability: ")
    stability = re.search(r"<h2>Stability \(model fit\)</h2>(.*?)</section>", page, flags=re.S).group(1)
    for r in this_week.itertuples():  # the gate's numbers, from the same rows as the table
        assert f"{r.jaccard:.2f}" in stability and r.segment_name in stability
    # The cross-check speaks of the published labels (it runs on them, before publishing).
    assert set(published["segment_name"]) == set(check["segment_name"])
    assert pd.Series(names).str.len().min() > 3
