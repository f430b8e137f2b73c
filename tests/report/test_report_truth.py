"""The report tells the truth about its run: a held-back run, a degraded identity stage, currency, missing data."""

import datetime as dt
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
