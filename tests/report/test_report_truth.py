"""The report tells the truth about its run: a held-back run, a degraded identity stage, currency, missing data."""

import datetime as dt
import html
import re
import shutil

import pandas as pd
import pytest

from include.report.html import load_report_data, render_report
from include.runtime.warehouse import Warehouse
from tests.economics.test_economics_and_report import PREVIOUS, _report_inputs
from tests.handbuilt import AS_OF


@pytest.fixture(scope="module")
def prepared_inputs(tmp_path_factory):
    """The hand-built report inputs, made once (extract, identity, features, economics); each test gets a copy."""
    folder = tmp_path_factory.mktemp("report-inputs")
    wh, _ = _report_inputs(folder)
    wh.close()
    return folder / "w.duckdb"


@pytest.fixture
def report_wh(prepared_inputs, tmp_path) -> Warehouse:
    """A copy of the prepared report inputs, for this test alone (tests change them)."""
    for part in prepared_inputs.parent.glob(f"{prepared_inputs.name}*"):  # with a write-ahead log, if one is left
        shutil.copy(part, tmp_path / part.name)
    return Warehouse(f"duckdb:///{tmp_path / prepared_inputs.name}")


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="s\d+"><h2>(.*?)</h2>(.*?)</section>', page, flags=re.S))


def _gate_failed_this_week(wh) -> None:
    """Last week's run m1 was published; this week's m2 failed the gate, so m1's labels are shown."""
    d = {"as_of_date": AS_OF}
    this_week = pd.DataFrame({"as_of_date": AS_OF, "segment_id": [1, 2, 3],
                              "segment_name": ["Top value, recent", "Lapsing buyers, high returns", "One-time buyers"],
                              "customers": [1, 1, 1], "jaccard": [0.95, 0.52, 0.81], "model_run_id": "m2"})
    last_week = pd.DataFrame({"as_of_date": PREVIOUS, "segment_id": [1, 2], "segment_name": ["High-value core", "Hibernating"],
                              "name_rule": ["top by hand", "lapsed by hand"],
                              "customers": [1, 1], "jaccard": [0.91, 0.66], "model_run_id": "m1"})
    wh.replace_partition("segment_profiles", this_week, d)
    wh.replace_partition("segment_profiles", last_week, {"as_of_date": PREVIOUS})
    runs = pd.DataFrame({"as_of_date": [PREVIOUS, AS_OF], "model_run_id": ["m1", "m2"], "algorithm": "kmeans",
                         "k": [2, 3], "bootstrap_ari": [0.9, 0.7], "gate_passed": [True, False],
                         "published": [True, False],
                         "gate_reason": [None, "segment 2 'Lapsing buyers, high returns' bootstrap Jaccard 0.52 "
                                               "< min_jaccard 0.6"]})
    wh.replace_table("segmentation_runs", runs)


def test_held_back_labels_get_a_headline_banner_and_one_source_of_stability(report_wh):
    wh = report_wh
    with wh:
        _gate_failed_this_week(wh)
        data = load_report_data(wh, AS_OF)
    page = render_report(data)
    assert 'class="banner"' in page
    sections = _sections(page)
    headline = sections["Headline"]
    assert "Quality gate failed" in headline and f"labels published on {PREVIOUS}" in headline
    stability = sections["Stability (model fit)"]
    # The gate text and the table read the same run: 0.52 in both, last week's 0.66 nowhere.
    assert stability.count("0.52") == 2 and "0.66" not in stability
    assert f"published on {PREVIOUS}" in stability
    assert "Lapsing buyers, high returns" in stability


def test_passing_gate_has_no_banner(report_wh):
    wh = report_wh
    with wh:
        runs = pd.DataFrame([{"as_of_date": AS_OF, "model_run_id": "m1", "algorithm": "kmeans", "k": 2,
                              "bootstrap_ari": 0.9, "gate_passed": True, "published": True}])
        wh.replace_partition("segmentation_runs", runs, {"as_of_date": AS_OF})
        page = render_report(load_report_data(wh, AS_OF))
    assert 'class="banner"' not in page and "Quality gate this run: <b>passed</b>" in page


def test_degraded_identity_gets_a_banner_only_when_recorded(report_wh):
    wh = report_wh
    with wh:
        assert "Identity resolution ran degraded" not in render_report(load_report_data(wh, AS_OF))
        wh.replace_table("identity_runs", pd.DataFrame({
            "as_of_date": [AS_OF, AS_OF - dt.timedelta(days=7)], "method": ["exact", "splink"],
            "degraded": [True, False], "reason": ["Splink model rejected: F1 0.81 < 0.95", None]}))
        page = render_report(load_report_data(wh, AS_OF))
        wh.run_script("UPDATE identity_runs SET degraded = FALSE")
        healthy = render_report(load_report_data(wh, AS_OF))
    assert "Identity resolution ran degraded" in page and "F1 0.81" in page and "exact" in page
    assert "Identity resolution ran degraded" not in healthy


def test_currency_and_not_available_sections(report_wh):
    wh = report_wh
    with wh:
        wh.run_script("DELETE FROM customer_economics")  # no CLV, no per-customer profit
        wh.run_script("DELETE FROM profit_concentration")
        data = load_report_data(wh, AS_OF)
    data["features_unavailable"] = {"usage_sessions": "the same value (0) for every customer"}
    page = render_report(data, currency="$", currency_code="USD")
    assert "$56" in page and "£" not in page and "money in USD" in page
    sections = _sections(page)
    for title in ("CLV distribution", "Profit concentration", "CLV cross-check"):
        assert "Not available" in sections[title] and "<svg" not in sections[title], title
    assert "Usage (90 d)" in sections["Snake plot"] and "Not available this run" in sections["Snake plot"]
    assert "Not available this run" in sections["Relative importance"]


def test_naming_rules_are_shown(report_wh):
    wh = report_wh
    with wh:
        page = render_report(load_report_data(wh, AS_OF))
    named = _sections(page)["How segments were named (model fit)"]
    assert "top by hand" in named and "lapsed by hand" in named


BACKTEST_DATE = AS_OF - dt.timedelta(days=90)


def _claims_backtest(as_of: dt.date = AS_OF) -> pd.DataFrame:
    """A hand-written claims_backtest of the shared schema (the claims helper's table; read-only here)."""
    return pd.DataFrame({
        "as_of_date": as_of, "backtest_date": BACKTEST_DATE, "horizon_days": 90,
        "claim_kind": ["value", "lifecycle", "action"],
        "claim": ["top value", "lapsed", "deprioritise"],
        "segment_name": ["High-value core", "Hibernating", "Hibernating"],
        "customers": [120, 800, 800],
        "metric": ["rank by revenue per customer", "share who ordered again", "share of revenue"],
        "realised": [1.0, 0.40, 0.91], "bar": [1.0, 0.25, 0.10],
        "verdict": ["held", "failed", "failed"],
        "detail": ["Ranked first of 2 segments by revenue per customer in the 90 days after.",
                   "40% of the customers called lapsed ordered again within 90 days.",
                   "Customers told to deprioritise brought 91% of the next 90 days' revenue."]})


def _clv_backtest() -> pd.DataFrame:
    deciles = pd.DataFrame({"row_kind": "decile", "decile": range(1, 11), "metric": "decile", "customers": 100,
                            "predicted_purchases": [50.0 - 4 * i for i in range(10)],
                            "realised_purchases": [55.0 - 5 * i for i in range(10)],
                            "predicted_revenue": [5000.0 - 400 * i for i in range(10)],
                            "realised_revenue": [6000.0 - 550 * i for i in range(10)]})
    summary = pd.DataFrame({"row_kind": "summary", "metric": ["normalised_gini_revenue", "purchase_error_pct",
                                                              "top_decile_realised_revenue_share",
                                                              "top_decile_predicted_revenue_share"],
                            "customers": 1000, "value": [0.62, -1.54, 0.2286, 0.1563], "bar": [0.2, 25.0, None, None],
                            "verdict": ["held", "held", "not checked", "not checked"]})
    rows = pd.concat([deciles, summary], ignore_index=True)
    rows["as_of_date"], rows["calibration_end"], rows["horizon_days"] = AS_OF, BACKTEST_DATE, 90
    rows["clv_model"] = "MBG/NBD"
    return rows


def _clv_run(status: str = "champion", check_passed: bool | None = True, reason: str | None = None,
             assumed: bool = True) -> pd.DataFrame:
    return pd.DataFrame([{"as_of_date": AS_OF, "status": status, "clv_model": None if status == "unavailable"
                          else "MBG/NBD", "reason": reason, "holdout_error_pct": None if status == "unavailable"
                          else -1.54, "gross_margin": 0.35, "gross_margin_assumed": assumed,
                          "check_passed": check_passed, "holdout_mae": 0.31, "normalised_gini": 0.62,
                          "candidates": "BG/NBD: holdout MAE 0.3400, error +9.0%; MBG/NBD: holdout MAE 0.3100, "
                                        "error -1.5% (chosen)", "customers": 2, "fitted_as_of": None,
                          "model_run_id": "c1"}])


def test_backtest_section_tells_a_marketing_reader_what_happened(report_wh):
    wh = report_wh
    with wh:
        wh.replace_table("claims_backtest", _claims_backtest())
        wh.replace_partition("clv_backtest", _clv_backtest(), {"as_of_date": AS_OF})
        wh.replace_partition("clv_runs", _clv_run(), {"as_of_date": AS_OF})
        page = render_report(load_report_data(wh, AS_OF))
    title = f"What we said on {BACKTEST_DATE}, and what those customers did next"
    section = _sections(page)[title]
    assert f"On <b>{BACKTEST_DATE}</b> we made 3 statements" in section
    assert "<b>1 held</b>, <b>2 failed</b>, 0 could not be checked" in section
    # Each statement: what we said, about whom, what happened against what was needed, the verdict, in words.
    assert "“deprioritise”" in section and "share of revenue" in section
    assert "91.0%" in section and "10.0%" in section and "<b>✗ failed</b>" in section and "✓ held" in section
    assert "Customers told to deprioritise brought 91% of the next 90 days&#x27; revenue." in section
    # CLV: the top tenth's share of what was spent against what the model expected, and the rank measure.
    assert "the tenth it ranked highest brought <b>22.9%</b> of the revenue (it expected 15.6%)" in section
    assert "It expected <b>320</b> purchases from them all; they made <b>325</b> (-2%: fewer than they made)" \
        in section
    assert "<b>0.62</b>, needed 0.20: <b>✓ held</b>" in section
    assert section.count('<td class="num">100</td>') == 10  # one row per tenth, 100 customers each
    assert "£6,000" in section and "£1,050" in section and "<svg" in section


def test_backtest_section_not_available_without_its_tables_or_rows(report_wh):
    wh = report_wh
    with wh:
        wh.run_script("DROP TABLE IF EXISTS claims_backtest")
        missing = _sections(render_report(load_report_data(wh, AS_OF)))
        wh.replace_table("claims_backtest", _claims_backtest(as_of=PREVIOUS))  # rows of another date only
        other_date = _sections(render_report(load_report_data(wh, AS_OF)))
    section = missing["What we said before, and what those customers did next"]
    assert "Not available:</b> segment claims — the claims backtest has not run here" in section
    assert f"no clv_backtest rows for {AS_OF}" in section
    section = other_date["What we said before, and what those customers did next"]
    assert f"no claims_backtest rows for {AS_OF}" in section


def test_report_names_the_clv_model_its_holdout_error_and_the_assumed_margin(report_wh):
    wh = report_wh
    with wh:
        wh.replace_partition("clv_runs", _clv_run(), {"as_of_date": AS_OF})
        sections = _sections(render_report(load_report_data(wh, AS_OF)))
    headline = sections["Headline"]
    assert "CLV by <b>MBG/NBD</b> + Gamma-Gamma, holdout error <b>-1.5%</b>; it passed its check" in headline
    assert "assumed 35% gross margin: set gross_margin" in headline
    model = sections["CLV model"]
    assert "MBG/NBD (with Gamma-Gamma for spend)" in model and "-1.5%" in model and "0.62" in model
    assert "assumed 35% gross margin: set gross_margin" in model and "MBG/NBD: holdout MAE 0.3100" in model
    assert "CLV is margin: assumed 35% gross margin: set gross_margin" in sections["CLV distribution"]
    assert "gross margin (assumed 35% gross margin: set gross_margin)" in sections["Economics"]
    # A margin the run set is not called assumed.
    with wh:
        wh.replace_partition("clv_runs", _clv_run(assumed=False), {"as_of_date": AS_OF})
        wh.run_script("UPDATE segment_economics SET gross_margin_assumed = FALSE, gross_margin_rate = 0.4")
        sections = _sections(render_report(load_report_data(wh, AS_OF)))
    assert "assumed" not in sections["Headline"] and "assumed" not in sections["Economics"]
    assert "35% (set for this run)" in sections["CLV model"]


def test_clv_that_failed_its_check_is_not_presented_as_true(report_wh):
    reason = "CLV check failed: holdout purchase error +41.0% is beyond ±25% (clv_max_holdout_error_pct)"
    wh = report_wh
    with wh:
        wh.replace_partition("clv_runs", _clv_run("fitted", False, reason), {"as_of_date": AS_OF})
        sections = _sections(render_report(load_report_data(wh, AS_OF)))
    assert "failed their check and are not presented as true" in sections["Headline"]
    assert reason in sections["Headline"]
    assert "Not presented as true:</b> " + reason in sections["CLV distribution"]
    assert "<b>failed</b>: " + reason in sections["CLV model"]
    assert "The CLV figures failed their check</b> (see CLV model)" in sections["Economics"]


def test_clv_unavailable_is_said_everywhere_clv_is_used(report_wh):
    reason = "no purchase model fits this data: BG/NBD has no interior maximum (a -> 0)"
    wh = report_wh
    with wh:
        wh.replace_partition("clv_runs", _clv_run("unavailable", None, reason), {"as_of_date": AS_OF})
        wh.run_script("DELETE FROM customer_clv")
        wh.run_script("UPDATE customer_economics SET p_alive = NULL, clv_365d = NULL")
        wh.run_script("UPDATE segment_economics SET mean_clv_365d = NULL, total_clv_365d = NULL, alive_share = NULL")
        sections = _sections(render_report(load_report_data(wh, AS_OF)))
    said = html.escape(f"CLV not available: {reason}")
    for title in ("Headline", "CLV model", "CLV distribution", "Economics", "CLV cross-check", "Playbook",
                  "What we said before, and what those customers did next"):
        assert said in sections[title], title
    assert "mean CLV" not in sections["Economics"] and "holdout error" not in sections["CLV model"]


def test_identity_section_shows_the_estimates_when_recorded_and_the_banner_only_on_degraded(report_wh):
    wh = report_wh
    with wh:
        # A NULL flag is no evidence of a degraded run: no banner.
        wh.replace_table("identity_runs", pd.DataFrame({
            "as_of_date": [AS_OF], "method": ["source_id"], "degraded": [None], "reason": [None],
            "records": [4], "customers": [3]}).astype({"degraded": "boolean", "reason": "string"}))
        page = render_report(load_report_data(wh, AS_OF))
        assert 'class="banner"' not in page
        identity = _sections(page)["Identity resolution"]
        assert "source_id" in identity and "4 → 3" in identity and "estimated" not in identity
        wh.replace_table("identity_runs", pd.DataFrame({
            "as_of_date": [AS_OF], "method": ["splink"], "degraded": [False], "reason": [None], "records": [4],
            "customers": [3], "estimated_precision": [0.987], "estimated_recall": [None]}).astype(
            {"estimated_recall": "float64", "reason": "string"}))
        identity = _sections(render_report(load_report_data(wh, AS_OF)))["Identity resolution"]
    assert "estimated precision" in identity and "98.7%" in identity
    assert "estimated recall" in identity and "not estimated this run" in identity
