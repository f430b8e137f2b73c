"""CLV that cannot be fitted neither blocks nor misleads (issue #25, item 4), through the real stages.

One year of a wholesale-heavy invoice shop (``tests/clv/simulate.py``) where
no purchase model of the BG/NBD family has an interior maximum, run through
every stage as the DAG orders them (real DuckDB file, real MLflow store) with
default settings, then the CRM outbox push and the printed summary. Before,
``fit_clv`` failed and segments, report and pushes were all skipped; with
``clv_unit_days = 1`` P(alive) was 1 for every customer.
"""

import dataclasses
import datetime as dt
import html
import re

import pytest

from include.report.html import report_path
from include.runtime.paths import reports_dir
from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from include.stages import stage
from tests.clv.simulate import wholesale_invoice_shop
from tests.conftest import write_tables

END = dt.date(2026, 10, 31)
ORDER = ("extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv", "backtest_claims",
         "label_segments", "crosscheck_clv", "publish_segments", "track_migration", "build_economics", "compare_schemes", "run_experiment",
         "render_report")
#: CLV at its defaults. Segmentation (not under test here) quick and always published: KMeans at a fixed k,
#: few bootstrap refits, no stability gate; identity exact (one id per customer anyway). Spectral with the k
#: screen took 96 CPU-s of the test's 130.
QUICK = dict(identity_method="exact", algorithm="kmeans", k=4, n_bootstrap=4, n_init=2, min_jaccard=0.0)


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    url = f"duckdb:///{tmp_path_factory.mktemp('failsoft') / 'shop.duckdb'}"
    write_tables(url, wholesale_invoice_shop(retail=500, regulars=130, wholesale=15))
    run = RunInfo("test_clv_fail_soft", f"run-{END}", END, PipelineSettings(**QUICK), url)
    results = {name: stage(name)(run) for name in ORDER}
    return url, run, results


def _section(page: str, title: str) -> str:
    return re.search(rf"<h2>{re.escape(title)}</h2>(.*?)</section>", page, flags=re.S).group(1)


def test_no_purchase_model_fits_and_the_run_goes_on(shop_run):
    url, run, results = shop_run
    clv = results["fit_clv"]
    assert clv["status"] == "unavailable" and clv["customers"] == 0 and clv["clv_model"] is None
    assert clv["reason"].startswith("no purchase model fits this data: BG/NBD has no interior maximum")
    check = results["crosscheck_clv"]
    assert not check["checked"] and check["reason"] == f"could not check: CLV not available: {clv['reason']}"
    with Warehouse(url) as wh:
        d = {"d": END}
        runs = wh.query_df("SELECT * FROM clv_runs WHERE as_of_date = :d", d)
        assert len(runs) == 1 and runs["status"].iloc[0] == "unavailable" and runs["reason"].iloc[0] == clv["reason"]
        assert runs["gross_margin"].iloc[0] == 0.35 and bool(runs["gross_margin_assumed"].iloc[0])
        assert wh.scalar("SELECT COUNT(*) FROM customer_clv WHERE as_of_date = :d", d) == 0
        assert wh.scalar("SELECT COUNT(*) FROM clv_backtest WHERE as_of_date = :d", d) == 0
        # One row per published label, each saying it could not check and why; none flagged.
        check = wh.query_df("SELECT * FROM segment_clv_check WHERE as_of_date = :d", d)
        labels = wh.scalar("SELECT COUNT(DISTINCT segment_id) FROM segment_labels WHERE as_of_date = :d", d)
        assert len(check) == labels > 0 and not check["flag"].any()
        assert (check["reason"] == f"could not check: CLV not available: {clv['reason']}").all()
        # Segments are published, economics built, with nothing CLV-based invented.
        customers = wh.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d", d)
        assert customers == wh.scalar("SELECT COUNT(DISTINCT customer_key) FROM identity_map WHERE as_of_date = :d", d)
        econ = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", d)
        assert len(econ) >= 2 and econ["revenue"].gt(0).all()
        assert econ[["mean_clv_365d", "total_clv_365d", "alive_share"]].isna().all().all()
        assert econ["gross_margin_assumed"].all() and (econ["gross_margin_rate"] == 0.35).all()
        assert wh.scalar("SELECT COUNT(*) FROM customer_economics WHERE as_of_date = :d AND "
                         "(p_alive IS NOT NULL OR clv_365d IS NOT NULL)", d) == 0
        # The labels go out: the outbox push delivers every published customer.
        from include.crm.contract import deliver_to_outbox, ensure_crm_tables

        ensure_crm_tables(wh)
        pushed = deliver_to_outbox(wh, target="outbox", run_id="r1", as_of_date=END, label_date=END)
    assert pushed["written"] == customers > 500


def test_mlflow_says_clv_is_unavailable(shop_run):
    from include.runtime import tracking

    _, run, results = shop_run
    data = tracking.client().get_run(run.mlflow_run()).data
    assert data.tags["clv_status"] == "unavailable"
    assert data.tags["clv_unavailable"] == results["fit_clv"]["reason"]
    assert "no interior maximum" in data.tags["clv_model_failures"]
    assert data.metrics["clv.bgnbd.failed"] == 1.0 and data.metrics["clv.mbgnbd.failed"] == 1.0
    assert "clv_model" not in data.tags and "clv_champion" not in data.tags  # nothing fitted, nothing registered
    assert data.tags["clv_crosscheck"].startswith("could not check: CLV not available")


def test_report_says_clv_is_not_available(shop_run):
    _, _, results = shop_run
    reason = results["fit_clv"]["reason"]
    page = report_path(reports_dir(), END).read_text()
    said = f"CLV not available: {reason}"
    for title in ("Headline", "CLV model", "CLV distribution", "Economics", "CLV cross-check"):
        assert html.escape(said) in _section(page, title), title
    assert "<svg" not in _section(page, "CLV distribution")
    assert "mean CLV" not in _section(page, "Economics") and "alive (P" not in _section(page, "Economics")
    assert "could not check" in _section(page, "CLV cross-check")
    # The shop has no cost data and the margin is the default: both said where used.
    headline = _section(page, "Headline")
    assert "profit <b>cannot be measured: no cost data" in headline
    assert "gross margin (assumed 35% gross margin: set gross_margin)" in _section(page, "Economics")
    # One exact id per customer is not a degraded identity run.
    assert 'class="banner"' not in page


def test_summary_says_clv_is_not_available_and_prints_no_invented_cost(shop_run, monkeypatch, capsys):
    from include.report.summary import main

    url, _, results = shop_run
    monkeypatch.setenv("WAREHOUSE_URL", url)
    main()
    out = capsys.readouterr().out
    assert f"CLV not available: {results['fit_clv']['reason']}" in out
    fit = out.split("Model fit of")[1].split("\n\n")[0]
    assert " unknown " in fit and "0.00" not in fit  # cost column: no support data, so unknown, never 0.00
    assert "cannot be measured: no cost data" in out
    assert "assumed 35% gross margin: set gross_margin" in out
    assert "mean per customer of the model fit's segments" not in out  # no CLV table of zeros or blanks


def test_daily_units_do_not_bring_back_p_alive_of_one(shop_run):
    """The issue's workaround (clv_unit_days = 1) gave P(alive) = 1 for everyone; now it is unavailable too."""
    from include.stages.clv import fit_clv

    url, run, _ = shop_run
    daily = RunInfo(run.dag_id, "run-daily", END, dataclasses.replace(run.settings, clv_unit_days=1), url)
    result = fit_clv(daily)
    assert result["status"] == "unavailable"
    with Warehouse(url) as wh:
        assert wh.scalar("SELECT COUNT(*) FROM customer_clv WHERE as_of_date = :d", {"d": END}) == 0
