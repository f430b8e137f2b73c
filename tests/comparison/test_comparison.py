"""Legacy labels beside the segments: eta²/omega² worked out by hand, label resolution rules,
extract quarantine of unknown ids, the compare_schemes stage with and without labels, the report section."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.comparison.schemes import (
    BEHAVIOURAL,
    UNLABELLED,
    compare_schemes,
    crosstab,
    variance_explained,
    verdict,
)
from include.runtime.warehouse import Warehouse, named_sql
from tests.warehouses import warehouse

AS_OF = dt.date(2026, 1, 31)
SQL = named_sql("comparison.sql")


# -- the statistics --------------------------------------------------------------------------
def test_eta_and_omega_squared_match_the_hand_computation():
    # Groups a = {1, 3}, b = {5, 7}: grand mean 4, SS_total = 9+1+1+9 = 20,
    # SS_between = 2(2-4)² + 2(6-4)² = 16, SS_within = 4, MS_within = 4 / (4 - 2) = 2,
    # eta² = 16/20 = 0.8, omega² = (16 - 1·2) / (20 + 2) = 14/22.
    v = variance_explained([1.0, 3.0, 5.0, 7.0], ["a", "a", "b", "b"])
    assert (v.groups, v.customers) == (2, 4)
    assert v.ss_between == pytest.approx(16.0) and v.ss_total == pytest.approx(20.0)
    assert v.eta_squared == pytest.approx(0.8)
    assert v.omega_squared == pytest.approx(14 / 22)
    # Three unequal groups: {0}, {2, 4}, {10, 10, 10}; mean 46/6; worked out with fractions.
    x = [0.0, 2.0, 4.0, 10.0, 10.0, 10.0]
    g = ["p", "q", "q", "r", "r", "r"]
    grand = sum(x) / 6
    ss_t = sum((xi - grand) ** 2 for xi in x)
    ss_b = (0 - grand) ** 2 + 2 * (3 - grand) ** 2 + 3 * (10 - grand) ** 2
    v = variance_explained(x, g)
    assert v.eta_squared == pytest.approx(ss_b / ss_t)
    assert v.omega_squared == pytest.approx((ss_b - 2 * (2 / 3)) / (ss_t + 2 / 3))


def test_edge_cases_one_group_no_variance_missing_values():
    one = variance_explained([1.0, 2.0, 3.0], ["x", "x", "x"])
    assert one.eta_squared == 0.0 and one.omega_squared == 0.0
    flat = variance_explained([5.0, 5.0, 5.0], ["x", "y", "y"])
    assert np.isnan(flat.eta_squared)
    # A missing value leaves the customer out (not counted as 0).
    v = variance_explained([1.0, 3.0, np.nan, 5.0, 7.0], ["a", "a", "b", "b", "b"])
    assert v.customers == 4 and v.eta_squared == pytest.approx(0.8)
    with pytest.raises(ValueError, match="missing labels"):
        variance_explained([1.0, 2.0], ["a", None])


def test_omega_squared_does_not_reward_random_groups():
    rng = np.random.default_rng(3)
    values = rng.lognormal(3, 1, 2000)
    many = rng.integers(0, 40, 2000)
    v = variance_explained(values, many)
    # Forty random groups "explain" about 39/1999 of the variance by chance; omega² removes it.
    assert 0.005 < v.eta_squared < 0.05
    assert abs(v.omega_squared) < 0.015


def test_rank_basis_is_the_kruskal_wallis_effect_size_and_ignores_monotone_transforms():
    from scipy.stats import kruskal

    rng = np.random.default_rng(8)
    groups = rng.choice(["a", "b", "c", "d"], 500)
    values = pd.Series(rng.lognormal(2, 1.5, 500) * np.where(groups == "a", 3, 1)).round(0)  # ties too
    customers = pd.DataFrame({"customer_key": [f"k{i}" for i in range(500)], "segment_id": 1, "segment_name": "S",
                              "rfm_segment": groups, "profit": values, "clv_365d": np.log1p(values) ** 3})
    v = compare_schemes(customers, pd.DataFrame()).variance.set_index(["scheme", "measure", "basis"])
    h = kruskal(*[values[groups == g] for g in "abcd"]).statistic
    eta_rank = v.loc[("RFM map", "profit", "rank"), "eta_squared"]
    assert eta_rank == pytest.approx(h / (500 - 1), rel=1e-9)
    # CLV here is a monotone transform of profit: same ranks, same rank-based share; the amounts differ.
    assert v.loc[("RFM map", "clv_365d", "rank"), "eta_squared"] == pytest.approx(eta_rank, rel=1e-12)
    assert v.loc[("RFM map", "clv_365d", "amount"), "eta_squared"] != pytest.approx(
        v.loc[("RFM map", "profit", "amount"), "eta_squared"], rel=1e-3)


def test_a_relabelled_scheme_explains_exactly_what_the_segments_explain():
    rng = np.random.default_rng(5)
    n = 600
    seg = rng.integers(1, 6, n)
    customers = pd.DataFrame({
        "customer_key": [f"k{i}" for i in range(n)], "segment_id": seg,
        "segment_name": [f"Segment {s}" for s in seg], "rfm_segment": rng.choice(["Champions", "Lost"], n),
        "profit": seg * 10 + rng.normal(0, 15, n), "clv_365d": seg ** 2 + rng.gamma(2, 3, n),
    })
    rename = {1: "Gold", 2: "Silver", 3: "Bronze", 4: "Iron", 5: "Tin"}
    legacy = pd.DataFrame({"customer_key": customers["customer_key"], "scheme": "tier",
                           "label": customers["segment_id"].map(rename), "conflict": False})
    result = compare_schemes(customers, legacy)
    v = result.variance.set_index(["scheme", "measure", "basis"])
    for measure, basis in [(m, b) for m in ("profit", "clv_365d") for b in ("amount", "rank")]:
        ours, theirs = v.loc[(BEHAVIOURAL, measure, basis)], v.loc[("tier", measure, basis)]
        assert ours["eta_squared"] > 0.2
        assert theirs["eta_squared"] == pytest.approx(ours["eta_squared"], rel=1e-12)
        assert theirs["omega_squared"] == pytest.approx(ours["omega_squared"], rel=1e-12)
    # Each legacy label sits wholly in its segment.
    assert (result.crosstab["row_share"] == 1.0).all() and len(result.crosstab) == 5
    assert result.summary.iloc[0][["labels", "customers_labelled", "coverage"]].tolist() == [5, n, 1.0]
    text = verdict(result.variance)
    assert "behavioural segments explain" in text and "“tier”" in text


def test_unlabelled_customers_form_their_own_group_and_shares_sum_to_one():
    customers = pd.DataFrame({"customer_key": list("abcdef"), "segment_id": [1, 1, 2, 2, 2, 3],
                              "segment_name": ["S1", "S1", "S2", "S2", "S2", "S3"],
                              "rfm_segment": ["Lost"] * 6, "profit": [None] * 6,
                              "clv_365d": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    legacy = pd.DataFrame({"customer_key": ["a", "c", "d", "zz"], "scheme": "persona",
                           "label": ["P", "P", "Q", "Q"], "conflict": [False, True, False, False]})
    result = compare_schemes(customers, legacy)
    # No cost data: profit is not compared, CLV is.
    assert set(result.variance["measure"]) == {"clv_365d"} and "profit" in result.measures_unavailable
    cells = result.crosstab.set_index(["legacy_label", "segment_id"])
    assert cells.loc[(UNLABELLED, 2), "customers"] == 1 and cells.loc[(UNLABELLED, 1), "customers"] == 1
    assert cells.loc[("P", 1), "row_share"] == pytest.approx(0.5)
    assert result.crosstab.groupby("legacy_label")["row_share"].sum().round(12).eq(1.0).all()
    # "zz" is not a published customer: left out of coverage.
    summary = result.summary.iloc[0]
    assert (summary["customers_labelled"], summary["conflicts"]) == (3, 1)
    assert summary["coverage"] == pytest.approx(0.5)
    groups = result.variance.loc[result.variance["scheme"] == "persona", "groups"]
    assert (groups == 3).all() and len(groups) == 2  # P, Q and (no label); amounts and ranks
    # A crosstab alone: counts and row shares.
    table = crosstab(pd.Series(["x", "x", "y"]), pd.Series([1, 2, 2]), pd.Series(["A", "B", "B"]))
    assert table["customers"].tolist() == [1, 1, 1] and table["row_share"].tolist() == [0.5, 0.5, 1.0]


def test_a_scheme_with_customer_level_labels_is_left_out():
    n = 120
    customers = pd.DataFrame({"customer_key": [f"k{i}" for i in range(n)], "segment_id": np.arange(n) % 3,
                              "segment_name": "S", "rfm_segment": "Lost", "profit": np.arange(n, dtype=float),
                              "clv_365d": np.arange(n, dtype=float)})
    legacy = pd.DataFrame({"customer_key": customers["customer_key"], "scheme": "email",
                           "label": [f"person{i}@example.com" for i in range(n)], "conflict": False})
    result = compare_schemes(customers, legacy)
    assert "email" in result.skipped and "distinct labels" in result.skipped["email"]
    assert "email" not in set(result.variance["scheme"]) and result.crosstab.empty


# -- resolving labels to customers (SQL, both dialects) ----------------------------------------
@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_resolution_most_recent_then_most_records_then_alphabetical(kind, tmp_path):
    ids = pd.DataFrame({"as_of_date": AS_OF, "source_system": ["web", "app", "cc", "web", "app", "cc", "web"],
                        "source_id": ["1", "1", "1", "2", "2", "2", "3"],
                        "customer_key": ["A", "A", "A", "B", "B", "B", "C"]})
    d = lambda s: dt.date.fromisoformat(s) if s else None  # noqa: E731
    labels = pd.DataFrame.from_records([
        # A, tier: web's own history (Silver then Gold: its current label is Gold, not a conflict),
        # app says Silver later than web's Silver but earlier than Gold -> most recent: Gold.
        ("web", "1", "tier", "Silver", d("2024-01-01")), ("web", "1", "tier", "Gold", d("2025-01-01")),
        ("app", "1", "tier", "Silver", d("2024-06-01")),
        # B, tier: all on one date; two records say Bronze, one Silver -> most records: Bronze.
        ("web", "2", "tier", "Silver", d("2025-01-01")), ("app", "2", "tier", "Bronze", d("2025-01-01")),
        ("cc", "2", "tier", "Bronze", d("2025-01-01")),
        # B, persona: undated, one each -> first alphabetically.
        ("web", "2", "persona", "Zed", None), ("app", "2", "persona", "Ann", None),
        # A, persona: a dated label beats an undated one.
        ("web", "1", "persona", "Old", None), ("cc", "1", "persona", "New", d("2020-01-01")),
        # C: one record, one label.
        ("web", "3", "tier", "Gold", d("2025-05-05")),
    ], columns=["source_system", "source_id", "scheme", "label", "valid_from"]).assign(as_of_date=AS_OF)
    with warehouse(kind, tmp_path) as wh:
        wh.ensure_schema()
        wh.replace_partition("identity_map", ids, {"as_of_date": AS_OF})
        wh.replace_partition("stg_legacy_labels", labels, {"as_of_date": AS_OF})
        got = wh.query_df(SQL["resolved_labels"], {"as_of_date": AS_OF})
    got = got.set_index(["customer_key", "scheme"])
    expect = {("A", "tier"): ("Gold", "most_recent", True, 2), ("B", "tier"): ("Bronze", "most_records", True, 3),
              ("B", "persona"): ("Ann", "first_alphabetically", True, 2),
              ("A", "persona"): ("New", "most_recent", True, 2), ("C", "tier"): ("Gold", "single", False, 1)}
    assert len(got) == len(expect)
    for key, (label, rule, conflict, records) in expect.items():
        row = got.loc[key]
        assert (row["label"], row["rule"], bool(row["conflict"]), int(row["records"])) == (label, rule, conflict,
                                                                                           records), key


# -- extract, the stage and the report on a warehouse --------------------------------------------
def _raw_tables() -> dict[str, pd.DataFrame]:
    from tests.handbuilt import raw_tables

    tables = raw_tables()
    tables["raw_legacy_labels"] = pd.DataFrame({
        "source_system": ["web", "web", "app", "call_centre", "web", "call_centre", "web"],
        "source_id": ["W1", "W1", "A1", "C1", "W9", "C1", "W2"],
        "scheme": ["tier", "tier", "tier", "tier", "tier", "tier", "tier"],
        "label": ["Silver", "Gold", "Silver", "Bronze", "Gold", "Gold", None],
        "valid_from": ["2025-01-01", "2026-01-01", "2025-06-01", "2026-01-01", "2026-01-01",
                       "2026-03-01", "2026-01-01"],
    })
    return tables


def _published(tmp_path) -> tuple[str, dict[str, str], dict]:
    """A hand-built warehouse up to economics: 3 customers, segments, RFM, profit and CLV set by hand."""
    from include.extract.validate import extract_and_validate
    from include.identity.resolve import resolve_identities

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    tables = _raw_tables()
    with Warehouse(url) as wh:
        for name, frame in tables.items():
            wh.replace_table(name, frame)
        reports = {r.table: r for r in extract_and_validate(wh, AS_OF, max_bad_share=1.0)}
        resolve_identities(wh, AS_OF, method="exact")
        ids = wh.query_df("SELECT source_id, customer_key FROM identity_map WHERE as_of_date = :d", {"d": AS_OF})
        keys = dict(zip(ids["source_id"], ids["customer_key"], strict=True))
        ann, bob, cy = keys["W1"], keys["C1"], keys["W2"]
        people = [ann, bob, cy]
        segs = pd.DataFrame({"as_of_date": AS_OF, "customer_key": people, "segment_id": [1, 2, 2],
                             "segment_name": ["High-value core", "Hibernating", "Hibernating"], "model_run_id": "m1",
                             "rfm_segment": ["Champions", "Lost", "Lost"]})
        econ = segs[["as_of_date", "customer_key", "segment_id", "segment_name"]].assign(profit=[90.0, 10.0, 20.0])
        clv = pd.DataFrame({"as_of_date": AS_OF, "customer_key": people, "clv_365d": [120.0, 8.0, 4.0]})
        with wh.begin() as conn:
            wh.replace_partition("customer_segments", segs, {"as_of_date": AS_OF}, conn=conn)
            wh.replace_partition("customer_economics", econ, {"as_of_date": AS_OF}, conn=conn)
            wh.replace_partition("customer_clv", clv, {"as_of_date": AS_OF}, conn=conn)
    return url, {"ann": ann, "bob": bob, "cy": cy}, reports


def _run(url: str, name: str):
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings

    return RunInfo("test_comparison", name, AS_OF, PipelineSettings(), url)


def test_extract_then_stage_labels_crosstab_exact_variance_and_skip_when_labels_are_gone(tmp_path, caplog):
    import logging

    from include.extract.validate import extract_and_validate
    from include.report.html import render_report
    from include.report.personas import TITLE, load_personas_data, personas_sections
    from include.stages import stage

    url, keys, reports = _published(tmp_path)
    with Warehouse(url) as wh:
        quarantine = wh.query_df("SELECT source_key, reason, detail FROM quarantine WHERE as_of_date = :d "
                                 "AND source_table = 'raw_legacy_labels' ORDER BY source_key", {"d": AS_OF})
        staged = wh.query_df("SELECT source_id, label FROM stg_legacy_labels WHERE as_of_date = :d "
                             "ORDER BY source_id, valid_from", {"d": AS_OF})
    # Extract: an unknown id and a missing label are quarantined with their reason; C1's Gold from
    # 2026-03-01 is after the as-of date: not staged, counted for later runs.
    assert quarantine.to_dict("records") == [
        {"source_key": "web|W2|tier|2026-01-01", "reason": "missing_required_value", "detail": "label=NULL"},
        {"source_key": "web|W9|tier|2026-01-01", "reason": "unknown_customer_id", "detail": "source_id=W9"},
    ]
    assert staged.values.tolist() == [["A1", "Silver"], ["C1", "Bronze"], ["W1", "Silver"], ["W1", "Gold"]]
    report = reports["raw_legacy_labels"]
    assert (report.rows_staged, report.rows_quarantined, report.rows_after_as_of) == (4, 2, 1)

    out = stage("compare_schemes")(_run(url, "with-labels"))
    assert out["legacy_labels"] and out["schemes"] == ["tier"]
    with Warehouse(url) as wh:
        labels = wh.query_df("SELECT * FROM customer_legacy_labels WHERE as_of_date = :d", {"d": AS_OF})
        variance = wh.query_df("SELECT * FROM scheme_variance WHERE as_of_date = :d", {"d": AS_OF})
        cells = wh.query_df("SELECT * FROM legacy_crosstab WHERE as_of_date = :d", {"d": AS_OF})
        summary = wh.query_df("SELECT * FROM legacy_label_summary WHERE as_of_date = :d", {"d": AS_OF})
        section = personas_sections(load_personas_data(wh, AS_OF))
    # Ann: W1 Gold (2026) beats A1 Silver (2025-06) -> Gold, a conflict; Bob: Bronze; Cy: no label.
    by_key = labels.set_index("customer_key")
    assert by_key.loc[keys["ann"], ["label", "rule"]].tolist() == ["Gold", "most_recent"]
    assert bool(by_key.loc[keys["ann"], "conflict"])
    assert by_key.loc[keys["bob"], "label"] == "Bronze" and keys["cy"] not in by_key.index
    # Tier groups Gold {90}, Bronze {10}, (no label) {20}: every customer alone, eta² = 1.
    # Segments {90}, {10, 20}: profit mean 40, SS_total = 2500+900+400 = 3800, SS_within = 50,
    # eta² = 3750/3800; omega² = (3750 - 1·50) / (3800 + 50).
    v = variance.set_index(["scheme", "measure", "basis"])
    assert v.loc[("tier", "profit", "amount"), "eta_squared"] == pytest.approx(1.0)
    assert np.isnan(v.loc[("tier", "profit", "amount"), "omega_squared"])  # N = k: no residual degrees of freedom
    assert v.loc[(BEHAVIOURAL, "profit", "amount"), "eta_squared"] == pytest.approx(3750 / 3800)
    assert v.loc[(BEHAVIOURAL, "profit", "amount"), "omega_squared"] == pytest.approx(3700 / 3850)
    # Same split as the segments.
    assert v.loc[("RFM map", "profit", "amount"), "eta_squared"] == pytest.approx(3750 / 3800)
    # Ranks 3 | 1, 2: SS_total = 2, SS_within = 0.5, eta² = 0.75, omega² = (1.5 - 0.5) / (2 + 0.5).
    assert v.loc[(BEHAVIOURAL, "profit", "rank"), "eta_squared"] == pytest.approx(0.75)
    assert v.loc[(BEHAVIOURAL, "profit", "rank"), "omega_squared"] == pytest.approx(0.4)
    assert len(v) == 3 * 2 * 2  # 3 schemes x 2 measures x 2 bases
    assert len(cells) == 3 and (cells["row_share"] == 1.0).all()
    assert summary[["customers_labelled", "customers_total", "conflicts", "records_staged"]].values.tolist() == [
        [2, 3, 1, 4]]
    # The report section: verdict, bars, heatmap; segment names and labels only, no customer keys.
    (title, body), = section
    assert title == TITLE and "behavioural segments explain" in body and "<svg" in body
    assert "“tier” by segment" in body and "Gold" in body and "High-value core" in body
    assert "<script" not in body and not any(k in body for k in keys.values())

    # The business stops sending labels: extract clears the date's staged labels, and the re-run of the
    # stage says so, replaces the date's rows and compares the segments with the RFM map only.
    with Warehouse(url) as wh:
        wh.run_script("DROP TABLE raw_legacy_labels")
        extract_and_validate(wh, AS_OF, max_bad_share=1.0)
    with caplog.at_level(logging.INFO, logger="include.stages.comparison"):
        out = stage("compare_schemes")(_run(url, "no-labels"))
    assert not out["legacy_labels"] and out["schemes"] == []
    assert "no legacy labels" in caplog.text
    with Warehouse(url) as wh:
        kinds = wh.query_df("SELECT scheme_kind FROM scheme_variance WHERE as_of_date = :d", {"d": AS_OF})
        left = [wh.scalar(f"SELECT COUNT(*) FROM {t} WHERE as_of_date = :d", {"d": AS_OF})
                for t in ("legacy_crosstab", "customer_legacy_labels", "legacy_label_summary")]
        data = load_personas_data(wh, AS_OF)
    assert kinds["scheme_kind"].value_counts().to_dict() == {"behavioural": 4, "rfm": 4} and left == [0, 0, 0]
    (_, body), = personas_sections(data)
    assert "No legacy labels" in body and "RFM map" in body
    # Hooked into the page; a data dict without the comparison renders without the section.
    assert TITLE in render_report(_minimal_report_data(data))
    assert TITLE not in render_report(_minimal_report_data(None))


def _minimal_report_data(personas) -> dict:
    econ = pd.DataFrame({"segment_id": [1], "segment_name": ["S"], "customers": [3], "customer_share": [1.0],
                         "revenue": [10.0], "gross_margin": [3.5], "discount_spend": [0.0], "cost_to_serve": [1.0],
                         "profit": [2.5], "profit_per_customer": [0.8], "profit_share": [1.0],
                         "mean_clv_365d": [5.0], "total_clv_365d": [15.0], "label_stability": [1.0]})
    data = {"as_of_date": AS_OF, "economics": econ, "names": pd.Series({1: "S"}),
            "snake": pd.DataFrame({"frequency": [0.0]}, index=[1]),
            "importance": pd.DataFrame({"frequency": [0.0]}, index=[1]), "clv": pd.DataFrame(),
            "curve": pd.DataFrame(), "stability": pd.DataFrame(columns=["segment_name", "customers", "jaccard"]),
            "run": pd.DataFrame(), "transitions": pd.DataFrame(), "clv_check": pd.DataFrame(),
            "priority": pd.DataFrame()}
    if personas is not None:
        data["personas"] = personas
    return data


def test_example_shop_labels_load_extract_and_resolve(tmp_path):
    from include.extract.validate import extract_and_validate
    from include.identity.resolve import resolve_identities
    from include.load import load_mapping, read_mapping
    from tests.conftest import ROOT

    url, as_of = f"duckdb:///{tmp_path / 'shop.duckdb'}", dt.date(2025, 12, 31)
    for mapping in ("mapping.toml", "legacy_labels.toml"):
        load_mapping(read_mapping(ROOT / "examples" / "shop" / mapping), url, progress=False)
    source = pd.read_csv(ROOT / "examples" / "shop" / "kundenstatus.csv", sep=";", dtype=str)
    with Warehouse(url) as wh:
        reports = {r.table: r for r in extract_and_validate(wh, as_of)}
        resolve_identities(wh, as_of, method="exact")
        quarantine = wh.query_df("SELECT source_key, reason FROM quarantine WHERE source_table = 'raw_legacy_labels'")
        resolved = wh.query_df(SQL["resolved_labels"], {"as_of_date": as_of})
    assert reports["raw_legacy_labels"].rows_staged == len(source) - 1
    assert quarantine.values.tolist() == [["webshop|W99998|Kundenstufe|2025-01-01", "unknown_customer_id"]]
    assert set(resolved["scheme"]) == {"Kundenstufe", "Persona"}
    assert not resolved.duplicated(["customer_key", "scheme"]).any()
    # Web-shop and store records of one person disagreeing on the same day: a counted conflict, settled
    # by the documented order (equal dates, one record each: first alphabetically).
    tiers = resolved[resolved["scheme"] == "Kundenstufe"]
    assert tiers["conflict"].sum() > 0
    assert set(tiers.loc[tiers["conflict"], "rule"]) == {"first_alphabetically"}


def test_verdict_names_each_scheme_once_and_says_who_explains_more():
    rows = []
    for kind, scheme, amount, rank in (("behavioural", BEHAVIOURAL, 0.29, 0.71), ("rfm", "RFM map", 0.21, 0.32),
                                       ("legacy", "tier", 0.37, 0.28), ("legacy", "persona", -0.001, 0.0)):
        rows += [{"scheme": scheme, "scheme_kind": kind, "measure": "profit", "basis": "amount",
                  "omega_squared": amount},
                 {"scheme": scheme, "scheme_kind": kind, "measure": "profit", "basis": "rank", "omega_squared": rank}]
    text = verdict(pd.DataFrame(rows))
    assert text == ("The behavioural segments explain 29% of the variance in profit (71% of its ranking); "
                    "the legacy “persona” labels 0% (0%), the legacy “tier” labels 37% (28%), the RFM map 21% (32%): "
                    "the legacy “tier” labels explain more of the amounts, which the largest customers dominate; "
                    "the segments order customers by profit best.")
    better = pd.DataFrame(rows).assign(omega_squared=lambda f: np.where(f["scheme"] == BEHAVIOURAL, 0.9, 0.1))
    assert verdict(better).endswith(": the segments explain the most.")
