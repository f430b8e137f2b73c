"""Segment economics on a hand-built dataset, profit concentration, priorities, and the HTML report."""

import datetime as dt
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from include.economics.build import (
    EconomicsSettings,
    build_economics,
    intervention_priority,
    load_playbook,
    playbook_entry,
    profit_concentration,
)
from include.extract.validate import extract_and_validate
from include.features.build import build_customer_features
from include.identity.resolve import resolve_identities
from include.report.html import load_report_data, render_report, write_report
from include.runtime.settings import DEFAULT_SUPPORT_COST_BY_CHANNEL
from include.runtime.warehouse import Warehouse
from tests.handbuilt import AS_OF, raw_tables

PREVIOUS = AS_OF - dt.timedelta(days=7)


def _handbuilt_warehouse(tmp_path) -> tuple[Warehouse, dict[str, str]]:
    wh = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    for name, frame in raw_tables().items():
        wh.replace_table(name, frame)
    extract_and_validate(wh, AS_OF, max_bad_share=1.0)
    resolve_identities(wh, AS_OF, method="exact")  # 4 hand-built records: too few to train Splink
    build_customer_features(wh, AS_OF, DEFAULT_SUPPORT_COST_BY_CHANNEL)
    ids = wh.query_df("SELECT source_id, customer_key FROM identity_map WHERE as_of_date = :d", {"d": AS_OF})
    keys = dict(zip(ids["source_id"], ids["customer_key"], strict=True))
    ann, bob = keys["W1"], keys["C1"]
    segs = pd.DataFrame({"as_of_date": AS_OF, "customer_key": [ann, bob], "segment_id": [1, 2],
                         "segment_name": ["High-value core", "Hibernating"], "model_run_id": "m1"})
    wh.replace_partition("customer_segments", segs, {"as_of_date": AS_OF})
    # Last week both were in segment 1: ann stayed, bob left it.
    prev = segs.assign(as_of_date=PREVIOUS, segment_id=1, segment_name="High-value core")
    wh.replace_partition("customer_segments", prev, {"as_of_date": PREVIOUS})
    clv = pd.DataFrame({"as_of_date": AS_OF, "customer_key": [ann, bob], "p_alive": [0.9, 0.3],
                        "clv_365d": [120.0, 8.0], "model_run_id": "c1"})
    wh.replace_partition("customer_clv", clv, {"as_of_date": AS_OF})
    profiles = pd.DataFrame({"as_of_date": AS_OF, "segment_id": [1, 2], "segment_name": ["High-value core", "Hibernating"],
                             "name_rule": ["top by hand", "lapsed by hand"], "customers": [1, 1],
                             "jaccard": [0.91, 0.62], "model_run_id": "m1",
                             "standing": [json.dumps(TOP), json.dumps(LAPSED_ONE_TIME)]})
    wh.replace_partition("segment_profiles", profiles, {"as_of_date": AS_OF})
    return wh, {"ann": ann, "bob": bob}


TOP = {"value": "top", "recency": "recent", "frequency": "frequent", "tenure": None, "basket": None, "traits": []}
LAPSED_ONE_TIME = {"value": "mid", "recency": "lapsed", "frequency": "one-time", "tenure": None,
                   "basket": "large baskets", "traits": []}


def test_economics_match_the_hand_worked_numbers(tmp_path):
    wh, keys = _handbuilt_warehouse(tmp_path)
    with wh:
        figures = build_economics(wh, AS_OF, EconomicsSettings(gross_margin=0.35, servicing_cost_per_customer=4.0,
                                                               servicing_cost_per_order=0.5))
        per = wh.query_df("SELECT * FROM customer_economics WHERE as_of_date = :d", {"d": AS_OF}).set_index("customer_key")
        seg = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", {"d": AS_OF}).set_index("segment_id")
        # Re-running replaces the date's rows.
        build_economics(wh, AS_OF, EconomicsSettings())
        assert wh.scalar("SELECT COUNT(*) FROM segment_economics WHERE as_of_date = :d", {"d": AS_OF}) == 2
        prio = wh.query_df("SELECT * FROM customer_priority WHERE as_of_date = :d", {"d": AS_OF}).set_index("customer_key")
    ann, bob = per.loc[keys["ann"]], per.loc[keys["bob"]]
    # Ann, 365 days to 2026-01-31: o2 (100, discount 10), o3 (50 - 25 returned), o4 (30); o5 is after the date.
    assert ann["orders"] == 3 and ann["revenue"] == pytest.approx(155.0) and ann["discount_spend"] == pytest.approx(10.0)
    assert ann["gross_margin"] == pytest.approx(155 * 0.35)
    assert ann["support_cost"] == pytest.approx(9.5)  # phone 8.50 + chat 1.00
    assert ann["servicing_cost"] == pytest.approx(4.0 + 3 * 0.5)
    assert ann["profit"] == pytest.approx(54.25 - 9.5 - 5.5)
    # Bob: o6 on 2025-03-01 (60), no support.
    assert bob["revenue"] == pytest.approx(60.0) and bob["profit"] == pytest.approx(21.0 - 4.5)
    total = 39.25 + 16.5
    assert seg.loc[1, "profit_share"] == pytest.approx(39.25 / total)
    assert seg.loc[1, "customer_share"] == pytest.approx(0.5)
    assert seg.loc[1, "mean_clv_365d"] == pytest.approx(120.0)
    assert seg["cost_known"].all()  # support contacts exist, servicing costs configured
    assert seg.loc[1, "label_stability"] == pytest.approx(0.5)  # ann kept her label, bob's moved
    assert seg.loc[1, "previous_customers"] == 2 and pd.isna(seg.loc[2, "label_stability"])
    assert seg.loc[1, "label_kept_customers"] == 1
    # Repeat retention (90-day windows to 2026-01-31): ann ordered in (2025-08-04, 2025-11-02]? No: her
    # orders are 2025-12-01 and later, all in the last window, so no base; bob's last order is 2025-03-01.
    assert seg["retention_base"].tolist() == [0, 0] and seg["repeat_retention"].isna().all()
    assert seg.loc[1, "alive_share"] == 1.0 and seg.loc[2, "alive_share"] == 0.0  # p_alive 0.9 and 0.3
    assert figures["profit"] == pytest.approx(total)
    assert figures["share_of_customers_paying_for_all"] == pytest.approx(1.0)
    # Playbook: top value at risk 0.1 (low) -> medium. Bob's segment stands as lapsed one-time buyers, but the
    # action follows his own state: one order 336 days ago against the shop's typical gap of 199 days (ann's,
    # the only repeat buyer) is "new" (lapsing from 2 gaps), so he gets the onboarding journey (medium tier),
    # at risk 0.7 (high) -> high priority; nobody still within their cadence is deprioritised with a segment.
    assert prio.loc[keys["ann"], "priority"] == "medium" and prio.loc[keys["bob"], "priority"] == "high"
    assert prio.loc[keys["bob"], "lifecycle_state"] == "new" and prio.loc[keys["bob"], "action"].startswith("Onboarding")
    assert prio.loc[keys["ann"], "action"].startswith("Named account team")


def test_without_cost_data_cost_and_profit_are_unknown_not_invented(tmp_path):
    wh, keys = _handbuilt_warehouse(tmp_path)
    with wh:
        # A transactions-only shop: no support contacts, no servicing cost configured (the defaults).
        wh.run_script("DELETE FROM stg_support_contacts")
        build_customer_features(wh, AS_OF, DEFAULT_SUPPORT_COST_BY_CHANNEL)
        figures = build_economics(wh, AS_OF, EconomicsSettings(currency_code="USD", currency_symbol="$"))
        seg = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", {"d": AS_OF}).set_index("segment_id")
        per = wh.query_df("SELECT * FROM customer_economics WHERE as_of_date = :d", {"d": AS_OF})
        curve = wh.scalar("SELECT COUNT(*) FROM profit_concentration WHERE as_of_date = :d", {"d": AS_OF})
        # A configured servicing cost is cost data: then cost and profit are reported.
        known = build_economics(wh, AS_OF, EconomicsSettings(servicing_cost_per_order=1.0))
        seg_known = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", {"d": AS_OF})
    assert not seg["cost_known"].any()
    for column in ("support_cost", "servicing_cost", "cost_to_serve", "profit", "profit_per_customer", "profit_share"):
        assert seg[column].isna().all(), column
    assert per[["support_cost", "servicing_cost", "cost_to_serve", "profit"]].isna().all().all()
    # What is known stays: revenue, margin, CLV, currency.
    assert seg.loc[1, "revenue"] == pytest.approx(155.0) and seg.loc[1, "gross_margin"] == pytest.approx(155 * 0.35)
    assert (seg["currency_code"] == "USD").all() and (seg["currency_symbol"] == "$").all()
    assert curve == 0 and figures["share_of_customers_paying_for_all"] is None
    assert figures["cost_known"] is False and figures["profit"] is None
    assert figures["loss_making_segments"] is None and figures["cost_to_serve_loss_making"] is None
    assert figures["top_segment"] == "High-value core"  # highest revenue when profit is unknown
    assert known["cost_known"] is True and seg_known["cost_known"].all()
    # ann: 155 x 0.35 - 3 orders x 1.0; bob: 60 x 0.35 - 1.0 (no support contacts: 0, now known to be 0).
    assert known["profit"] == pytest.approx(155 * 0.35 - 3 + 60 * 0.35 - 1)


def test_repeat_retention_and_label_stability_on_two_dates(tmp_path):
    """Generated orders, two weekly dates: repeat retention is customers buying again, not labels kept."""
    from include.economics.build import model_and_published_moves
    from tests.clv.simulate import stage_shop, transactions_only_shop

    dates = [dt.date(2026, 10, 24), dt.date(2026, 10, 31)]
    tables = transactions_only_shop(600, seed=3, end=dates[-1])
    orders = tables["raw_orders"].assign(order_ts=lambda f: pd.to_datetime(f["order_ts"]))
    window = 60
    with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        wh.ensure_schema()
        stage_shop(wh, tables, dates)
        keys = sorted(tables["raw_identity_records"]["source_id"])
        # Two segments by key parity; on the second date the model moves 30 customers, 10 of them published.
        first = pd.DataFrame({"as_of_date": dates[0], "customer_key": keys,
                              "segment_id": [1 + i % 2 for i in range(len(keys))]})
        first["raw_segment_id"] = first["segment_id"]
        second = first.assign(as_of_date=dates[1])
        second.loc[:29, "raw_segment_id"] = 3 - second.loc[:29, "segment_id"]
        second.loc[:9, "segment_id"] = second.loc[:9, "raw_segment_id"]
        for frame, date in ((first, dates[0]), (second, dates[1])):
            frame["segment_name"] = frame["segment_id"].map({1: "Odd", 2: "Even"})
            frame["model_run_id"] = "m"
            wh.replace_partition("customer_segments", frame, {"as_of_date": date})
        for date in dates:
            build_economics(wh, date, EconomicsSettings(retention_window_days=window))
        seg = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d", {"d": dates[1]})
        moves = model_and_published_moves(wh, dates[1])
    seg = seg.set_index("segment_id")
    cutoff = pd.Timestamp(dates[1] + dt.timedelta(days=1))
    last = set(orders.loc[(orders["order_ts"] >= cutoff - pd.Timedelta(days=window))
                          & (orders["order_ts"] < cutoff), "source_id"])
    before = set(orders.loc[(orders["order_ts"] >= cutoff - pd.Timedelta(days=2 * window))
                            & (orders["order_ts"] < cutoff - pd.Timedelta(days=window)), "source_id"])
    for sid, members in second.groupby("segment_id")["customer_key"]:
        base = set(members) & before
        assert seg.loc[sid, "retention_base"] == len(base) > 10
        assert seg.loc[sid, "repeat_retention"] == pytest.approx(len(base & last) / len(base))
        assert 0.05 < seg.loc[sid, "repeat_retention"] < 0.95  # non-trivial
    # Label stability: 10 of 600 published labels moved; the 20 held back by hysteresis did not.
    kept = seg["label_kept_customers"].sum()
    assert kept == 590 and seg["previous_customers"].sum() == 600
    assert seg["previous_date"].iloc[0] == pd.Timestamp(dates[0])
    # The migration view: the model moved 30, the published labels 10.
    off = moves[moves["from_segment_id"] != moves["to_segment_id"]]
    assert off["model_customers"].sum() == 30 and off["published_customers"].sum() == 10
    assert set(off["from_segment"]) == {"Odd", "Even"}
    diag = moves[moves["from_segment_id"] == moves["to_segment_id"]]
    assert diag["model_customers"].sum() == 570 and diag["published_customers"].sum() == 590


def test_profit_concentration_finds_who_pays_for_everyone():
    profit = pd.Series([50.0, 40.0, 30.0, -10.0, -10.0] + [0.0] * 5)
    curve, payers = profit_concentration(profit, points=10)
    # Total 100; the top 3 make 120: the first 30% of customers already produce all of it.
    assert payers == pytest.approx(0.3)
    assert curve["profit_share"].iloc[0] == 0 and curve["profit_share"].max() == pytest.approx(1.2)
    assert curve["profit_share"].iloc[-1] == pytest.approx(1.0)
    _, none = profit_concentration(pd.Series([-1.0, -2.0]))
    assert np.isnan(none)


def test_priority_layers_churn_risk_on_the_segment():
    book = load_playbook()
    customers = pd.DataFrame({
        "customer_key": ["a", "b", "c", "d", "e"],
        "segment_id": [1, 1, 2, 3, 4],
        "segment_name": ["Top value, recent", "Top value, recent", "Lapsed one-time buyers, large baskets",
                         "Lapsing buyers, high returns", "Something new"],
        "p_alive": [0.2, 0.95, 0.1, 0.6, None],
        "lifecycle_state": ["active", "active", "lapsed", "lapsing", None],
        "repeat_buyer": [1.0, 1.0, 0.0, 1.0, None],
    })
    standings = {1: TOP, 2: LAPSED_ONE_TIME,
                 3: {"value": "mid", "recency": "lapsing", "frequency": "occasional", "traits": [["high returns", 6.1]]}}
    out = intervention_priority(customers, book, standings).set_index("customer_key")
    assert out.loc["a", "priority"] == "critical"  # high value + high risk
    assert out.loc["a", "action"].startswith("Named account team") and out.loc["a", "action_claim"] == "account team"
    assert out.loc["b", "priority"] == "medium"
    assert out.loc["c", "priority"] == "low" and out.loc["c", "value_tier"] == "dormant"  # lapsed + high risk
    assert "account" not in out.loc["c", "action"].lower() and out.loc["c", "action_claim"] == "exclude"
    assert out.loc["d", "action"].startswith("Review returns")  # the behaviour, not only the recency
    # No standing: the default rule; no P(alive) and no state: risk unknown (NULL), banded high.
    assert out.loc["e", "value_tier"] == "medium" and pd.isna(out.loc["e", "churn_risk"])
    assert out.loc["e", "risk_band"] == "high"
    assert pd.isna(out.loc["e", "action_claim"]) and out.loc["e", "playbook_rule"].startswith("default")


def test_actions_follow_each_customers_own_state():
    """A segment's members get what their own state calls for: only lapsed ones are deprioritised or excluded."""
    book = load_playbook()
    states = ["new", "active", "lapsing", "lapsed", "lapsed"]
    regulars = {"value": "mid", "recency": "mixed", "frequency": "repeat", "tenure": None, "basket": None,
                "traits": []}
    customers = pd.DataFrame({"customer_key": list("vwxyz"), "segment_id": 1, "segment_name": "Regular buyers",
                              "p_alive": 0.5, "lifecycle_state": states, "repeat_buyer": [0.0, 1, 1, 1, 0]})
    out = intervention_priority(customers, book, {1: regulars}).set_index("customer_key")
    assert out["action_claim"].iloc[:3].isna().all()
    assert out.loc["y", "action_claim"] == "deprioritise" and out.loc["z", "action_claim"] == "exclude"
    assert out.loc["v", "action"].startswith("Onboarding") and out.loc["w", "action"].startswith("Loyalty")
    # A lapsed member of a top-value segment is won back, never handed an account team; an active one is.
    top = pd.DataFrame({"customer_key": ["p", "q"], "segment_id": 2, "segment_name": "Top value",
                        "p_alive": 0.9, "lifecycle_state": ["active", "lapsed"], "repeat_buyer": 1.0})
    out = intervention_priority(top, book, {2: TOP}).set_index("customer_key")
    assert out.loc["p", "action_claim"] == "account team"
    assert out.loc["q", "action"].startswith("Personal win-back") and out.loc["q", "value_tier"] != "high"
    # An active customer of a lapsed segment is not deprioritised with it.
    lapsed_segment = {**LAPSED_ONE_TIME, "frequency": "repeat"}
    active = pd.DataFrame({"customer_key": ["r"], "segment_id": 3, "segment_name": "Lapsed repeat buyers",
                           "p_alive": 0.9, "lifecycle_state": ["active"], "repeat_buyer": [1.0]})
    assert intervention_priority(active, book, {3: lapsed_segment})["action_claim"].isna().all()
    # A tier whose backtest failed is withheld: its customers drop to the next rule that claims nothing.
    out = intervention_priority(customers, book, {1: regulars}, withheld={"deprioritise", "exclude"})
    assert out["action_claim"].isna().all()
    assert out.set_index("customer_key").loc["y", "action"].startswith("Automated win-back journey; no paid spend")
    # ...not to a sister claim: "exclude" withheld does not make its customers "deprioritise".
    out = intervention_priority(customers, book, {1: regulars}, withheld={"exclude"}).set_index("customer_key")
    assert pd.isna(out.loc["z", "action_claim"]) and out.loc["y", "action_claim"] == "deprioritise"
    assert "('exclude' withheld)" in out.loc["z", "playbook_rule"]


def test_a_lapsed_customer_never_gets_an_account_team():
    book = load_playbook()
    for value in ("top", "high", "mid", "low"):
        for basket in (None, "large baskets"):
            for buyer in ("one-time", "repeat"):
                entry = playbook_entry(book, {**LAPSED_ONE_TIME, "value": value, "basket": basket}, "lapsed", buyer)
                assert entry["value_tier"] in ("dormant", "low") and "account" not in entry["action"].lower()
                assert "lapsed" in entry["rule"]
    # ...whatever the segment's standing says.
    entry = playbook_entry(book, {**TOP, "recency": "active"}, "lapsed", "repeat")
    assert entry["claim"] != "account team" and entry["value_tier"] != "high"


def test_playbook_errors_name_the_rule(tmp_path):
    text = load_playbook.__globals__["DEFAULT_PLAYBOOK"].read_text()
    bad = tmp_path / "book.toml"
    bad.write_text(text.replace('value_tier = "dormant"\naction = "Final', 'value_tier = "vip"\naction = "Final'))
    with pytest.raises(ValueError, match="rules\\[2\\].*lapsed.*vip"):
        load_playbook(bad)
    # A rule that could hand a lapsed customer an account team is refused.
    bad.write_text(text.replace('state = ["new", "active"] }\nclaim = "account team"',
                                'state = ["active", "lapsed"] }\nclaim = "account team"'))
    with pytest.raises(ValueError, match="rules\\[4\\].*account team.*lapsed"):
        load_playbook(bad)
    # ... and one that would deprioritise customers who still buy.
    bad.write_text(text.replace('when = { state = "lapsed" }\nclaim = "deprioritise"',
                                'when = { state = ["lapsed", "active"] }\nclaim = "deprioritise"'))
    with pytest.raises(ValueError, match="rules\\[2\\].*deprioritise.*only customers whose own state is lapsed"):
        load_playbook(bad)
    bad.write_text(text.replace('when = { state = "new" }', 'when = { state = "new", colour = "red" }'))
    with pytest.raises(ValueError, match="unknown key.*colour"):
        load_playbook(bad)


def test_an_older_playbook_keeps_its_meaning_per_customer(tmp_path):
    """Rules written before the customer's state existed: deprioritise and account team are restricted by state."""
    old = tmp_path / "old.toml"
    old.write_text('''
[[rules]]
when = { recency = "lapsed" }
value_tier = "dormant"
action = "Final win-back email, then deprioritise"

[[rules]]
when = { value = "top", recency = ["recent", "active"] }
value_tier = "high"
action = "Named account team; proactive check-ins"

[default]
value_tier = "medium"
action = "Automated nurture journey"

[risk_bands]
high_risk = 0.5
medium_risk = 0.2

[priority.high]
high = "critical"
medium = "high"
low = "medium"

[priority.medium]
high = "high"
medium = "medium"
low = "low"

[priority.dormant]
high = "low"
medium = "low"
low = "low"
''')
    book = load_playbook(old)
    assert [r["claim"] for r in book["rules"]] == ["deprioritise", "account team"]
    assert playbook_entry(book, LAPSED_ONE_TIME, "active", "repeat")["claim"] is None
    assert playbook_entry(book, LAPSED_ONE_TIME, "lapsed", "repeat")["claim"] == "deprioritise"
    assert playbook_entry(book, TOP, "lapsed", "repeat")["claim"] is None
    assert playbook_entry(book, TOP, "active", "repeat")["claim"] == "account team"


def _report_inputs(tmp_path):
    wh, keys = _handbuilt_warehouse(tmp_path)
    build_economics(wh, AS_OF, EconomicsSettings(servicing_cost_per_customer=4.0, servicing_cost_per_order=0.5))
    transitions = pd.DataFrame({"from_date": PREVIOUS, "to_date": AS_OF, "from_segment_id": [1, 1],
                                "to_segment_id": [1, 2], "from_segment": "High-value core",
                                "to_segment": ["High-value core", "Hibernating"], "customers": [1, 1],
                                "rate": [0.5, 0.5], "clv_sum": [120.0, 8.0]})
    wh.replace_partition("segment_transitions", transitions, {"to_date": AS_OF})
    return wh, keys


def test_report_is_self_contained_formatted_and_free_of_pii(tmp_path):
    wh, keys = _report_inputs(tmp_path)
    with wh:
        page = render_report(load_report_data(wh, AS_OF), payers_share=1.0)
    for needle in ("Snake plot", "Relative importance", "CLV distribution", "Economics", "Profit concentration",
                   "Stability", "Migration since last run", "Playbook", "<svg"):
        assert needle in page, needle
    assert "£56" in page  # total profit 55.75 formatted as currency
    assert "50.0%" in page  # retention and shares as percentages
    # Nothing fetched from the network, no customer keys or raw identity values.
    import re

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", page)
    assert "<script" not in page
    for value in (*keys.values(), "ann.lee", "07000000001", "high street", "N01"):
        assert value.lower() not in page.lower(), value


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Debian's chromium is required (scripts/test.sh installs it: apt-get install chromium)")
    return found


def _headless(url: str, out_dir) -> tuple[str, "os.PathLike"]:
    shot = out_dir / "shot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={out_dir / 'profile'}", "--window-size=1280,2200", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120)
    return proc.stderr, shot


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Failed to load resource" in line
            or "Uncaught" in line]


def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    wh, _ = _report_inputs(tmp_path)
    with wh:
        path = write_report(wh, AS_OF, tmp_path / "reports", payers_share=1.0)
    # The detector can fail: a page that logs an error is caught.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><p>x</p><script>console.error('boom')</script></body></html>")
    stderr, _ = _headless(broken.as_uri(), tmp_path / "b")
    assert any("boom" in line for line in _console_errors(stderr)), stderr[-2000:]

    stderr, shot = _headless(path.as_uri(), tmp_path / "r")
    assert _console_errors(stderr) == [], stderr[-3000:]
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape[0] >= 2000 and image.shape[1] >= 1200
    # Not blank: a real page has dark text and coloured charts on a light background.
    assert image.std() > 20 and (image < 100).mean() > 0.005


def test_profit_concentration_of_unknown_profit_is_unknown():
    curve, payers = profit_concentration(pd.Series([10.0, float("nan"), -2.0]))
    assert curve.empty and np.isnan(payers)


def test_without_clv_the_risk_band_comes_from_each_customers_own_state():
    """No P(alive) (CLV unavailable): churn risk is unknown, not 1.0, and an active customer is not high risk."""
    book = load_playbook()
    customers = pd.DataFrame({"customer_key": ["a", "b", "c"], "segment_id": [1, 1, 1],
                              "segment_name": ["Top value"] * 3, "p_alive": [None, None, None],
                              "lifecycle_state": ["active", "lapsing", "lapsed"], "repeat_buyer": [1.0, 1.0, 1.0]})
    out = intervention_priority(customers, book, {1: TOP}).set_index("customer_key")
    assert out["churn_risk"].isna().all()
    assert out["risk_band"].to_dict() == {"a": "low", "b": "medium", "c": "high"}


def test_a_clv_fit_that_failed_its_check_is_recognised(tmp_path):
    """economics acts on P(alive) only when the date's CLV fit passed its check (clv_runs.status)."""
    import datetime as dt

    from include.economics.build import clv_failed_check
    from include.runtime.warehouse import Warehouse

    day = dt.date(2026, 11, 14)
    with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        wh.ensure_schema()
        assert not clv_failed_check(wh, day)  # no CLV run recorded
        for status, failed in (("champion", False), ("fitted", True), ("unavailable", False)):
            wh.replace_partition("clv_runs", pd.DataFrame([{"as_of_date": day, "status": status}]),
                                 {"as_of_date": day})
            assert clv_failed_check(wh, day) is failed, status
