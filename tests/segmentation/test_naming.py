"""Segment names: from member shares and standing against the other segments, unique without numbers, true.

Every name word is a claim about the segment's members: lifecycle words need a clear majority of
members in that state (never a segment median), value words a place in the top third by revenue per
customer, contrasts a material difference on lifetime facts.
"""

import json
import re

import numpy as np
import pandas as pd
import pytest

from include.features.build import NUMERIC_FEATURES
from include.segmentation.model import available_features
from include.segmentation.naming import name_segments, segment_stats

BASE = dict(recency_days=40, frequency=3, monetary=180, avg_order_value=60, tenure_days=400, orders_lifetime=4,
            discount_share=0.1, return_rate=0.02, support_contacts=0.5, cost_to_serve=3, usage_sessions=0,
            email_open_rate=0, email_click_rate=0)


def customers(groups: dict[int, dict], n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` customers per segment id with the given feature means (small lognormal noise).

    ``state`` is the members' lifecycle state: one state, or ``{state: share}`` (default: active,
    or new for one-time buyers); ``recent`` the share who ordered in the last 90 days (default: 1
    for active/new members, 0 for the others).
    """
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for seg, spec in groups.items():
        spec = dict(spec)
        orders = spec.get("orders_lifetime", BASE["orders_lifetime"])
        state = spec.pop("state", "new" if orders <= 1 else "active")
        shares = state if isinstance(state, dict) else {state: 1.0}
        values = {**BASE, **spec}
        recent = values.pop("recent", None)
        frame = pd.DataFrame({k: v * rng.lognormal(0, 0.05, n) if k != "orders_lifetime" else np.full(n, float(v))
                              for k, v in values.items()})
        counts = np.round(np.array(list(shares.values())) * n).astype(int)
        counts[-1] = n - counts[:-1].sum()
        frame["lifecycle_state"] = np.repeat(list(shares), counts)
        frame["repeat_buyer"] = (frame["orders_lifetime"] >= 2).astype(float)
        buying = frame["lifecycle_state"].isin(["new", "active"]).to_numpy()
        if recent is None:
            frame["recency_days"] = np.where(buying, np.minimum(frame["recency_days"], 80), frame["recency_days"])
        else:
            recent_rows = np.arange(n) < round(recent * n)
            frame["recency_days"] = np.where(recent_rows, 30.0, np.maximum(frame["recency_days"], 200))
        frames.append(frame)
        labels += [seg] * n
    return pd.concat(frames, ignore_index=True), np.array(labels)


def names_of(groups, clv=None, **kw):
    naming = {k: kw.pop(k) for k in ("alive", "withheld", "clv_note") if k in kw}
    features, labels = customers(groups, **kw)
    columns, _ = available_features(features, NUMERIC_FEATURES)
    return name_segments(segment_stats(features, labels, columns), clv=clv, **naming)


LAPSED = dict(monetary=0.01, frequency=0.01, recency_days=480, state="lapsed")


def test_issue_14_shapes_get_true_unique_names():
    # The issue's run: three 'High-value core' segments, two 'Hibernating', and lapsed one-time
    # buyers with large baskets once called 'Big spenders'.
    groups = {
        1: dict(monetary=2400, frequency=20, orders_lifetime=30, recency_days=8, avg_order_value=120),
        2: dict(monetary=900, frequency=9, orders_lifetime=12, recency_days=20),
        3: dict(monetary=40, frequency=1, orders_lifetime=3, recency_days=60, avg_order_value=40),
        4: dict(LAPSED, orders_lifetime=1, recency_days=520, avg_order_value=300, tenure_days=520),
        5: dict(LAPSED, orders_lifetime=1, avg_order_value=45, tenure_days=480),
        6: dict(LAPSED, orders_lifetime=3, recency_days=430, avg_order_value=50),
    }
    named = names_of(groups)
    names = named["segment_name"].tolist()
    assert len(set(names)) == len(names)
    assert not any(re.search(r"\s\d+$", n) for n in names), names
    assert named.loc[1, "segment_name"].startswith("Top value")
    for seg in (4, 5, 6):
        assert named.loc[seg, "segment_name"].startswith("Lapsed"), named.loc[seg, "segment_name"]
        assert "value" not in named.loc[seg, "segment_name"].lower()
        standing = json.loads(named.loc[seg, "standing"])
        assert standing["recency"] == "lapsed" and standing["lifecycle"]["lapsed"] == 1.0
    assert named.loc[4, "segment_name"] == "Lapsed one-time buyers, large baskets"
    assert named.loc[6, "segment_name"] == "Lapsed repeat buyers"
    # Every name carries the rule that produced it: the member shares behind its lifecycle word.
    assert named["name_rule"].str.contains("100% lapsed").sum() == 3


def test_a_segment_half_active_half_lapsed_is_not_called_lapsed():
    # The CD retailer's "Lapsed repeat buyers": its median recency said lapsed, yet it held every active customer.
    groups = {1: dict(orders_lifetime=3, recency_days=300, state={"active": 0.45, "lapsed": 0.55}),
              2: dict(LAPSED, orders_lifetime=1),
              3: dict(monetary=600, frequency=8, orders_lifetime=9)}
    named = names_of(groups)
    standing = json.loads(named.loc[1, "standing"])
    assert standing["recency"] == "mixed" and standing["lifecycle"] == pytest.approx(
        {"new": 0.0, "active": 0.45, "lapsing": 0.0, "lapsed": 0.55})
    assert "lapsed" not in named.loc[1, "segment_name"].lower()
    assert "45% active" in named.loc[1, "name_rule"] and "-> mixed" in named.loc[1, "name_rule"]


def test_lapsed_needs_few_recent_orders_too():
    # 80% of members are lapsed by their own cadence, but 40% ordered within 90 days: not a lapsed segment.
    groups = {1: dict(orders_lifetime=3, state={"lapsed": 0.8, "active": 0.2}, recent=0.4),
              2: dict(orders_lifetime=3, state="lapsed", recent=0.1),
              3: dict(monetary=600, frequency=8, orders_lifetime=9)}
    named = names_of(groups)
    assert json.loads(named.loc[1, "standing"])["recency"] == "mixed"
    assert "ordered recently: not called lapsed" in named.loc[1, "name_rule"]
    assert json.loads(named.loc[2, "standing"])["recency"] == "lapsed"


def test_value_words_only_in_the_top_third_by_revenue_per_customer():
    # Six segments: the top third is ranks 1-2. Rank 3 has 1.4x the average revenue but gets no value word.
    groups = {1: dict(monetary=900, orders_lifetime=12), 2: dict(monetary=700, orders_lifetime=10),
              3: dict(monetary=650, orders_lifetime=9, avg_order_value=200),
              4: dict(monetary=100, orders_lifetime=5, discount_share=0.6),
              5: dict(monetary=60, orders_lifetime=1), 6: dict(monetary=40, orders_lifetime=2, return_rate=0.3)}
    named = names_of(groups)
    assert named.loc[1, "value_standing"] == "top" and named.loc[2, "value_standing"] == "high"
    assert named.loc[3, "value_standing"] == "mid" and "value" not in named.loc[3, "segment_name"].lower()
    assert "rank 3 of 6 (top third: rank <= 2)" in named.loc[3, "name_rule"]


def test_defining_behaviour_is_in_the_name():
    # The issue's small 'At risk' segment whose defining trait was a return rate six times the average.
    groups = {1: dict(monetary=600, frequency=8, orders_lifetime=9), 2: dict(),
              3: dict(return_rate=0.3, recency_days=120, state="lapsing"),
              4: dict(monetary=60, frequency=1, orders_lifetime=2)}
    named = names_of(groups)
    assert "high returns" in named.loc[3, "segment_name"]
    assert named.loc[3, "segment_name"].startswith("Lapsing")
    assert "return_rate" in named.loc[3, "name_rule"]
    standing = json.loads(named.loc[3, "standing"])
    assert standing["traits"][0][0] == "high returns" and standing["traits"][0][1] > 3


def test_value_claims_need_clv_to_agree():
    groups = {1: dict(monetary=2400, frequency=20, orders_lifetime=30, recency_days=8),
              2: dict(monetary=700, frequency=6, orders_lifetime=8), 3: dict(monetary=90), 4: dict(monetary=20)}
    alone = names_of(groups)
    assert alone.loc[1, "value_standing"] == "top" and "CLV not yet checked" in alone.loc[1, "name_rule"]
    agree = names_of(groups, clv=pd.Series({1: 900.0, 2: 400.0, 3: 50.0, 4: 10.0}))
    assert agree.loc[1, "segment_name"].startswith("Top value")
    # CLV ranks the revenue leader last of four: the claim is withheld, visibly.
    disagree = names_of(groups, clv=pd.Series({1: 5.0, 2: 400.0, 3: 50.0, 4: 60.0}))
    assert disagree.loc[1, "value_standing"] == "mid"
    assert "value" not in disagree.loc[1, "segment_name"].lower()
    assert "CLV disagrees" in disagree.loc[1, "name_rule"]
    unavailable = names_of(groups, clv_note="CLV not available: no purchase model fitted")
    assert "CLV not available" in unavailable.loc[1, "name_rule"]


def test_a_claim_a_backtest_found_false_is_not_made():
    groups = {1: dict(monetary=2400, frequency=20, orders_lifetime=30, recency_days=8),
              2: dict(monetary=700, frequency=6, orders_lifetime=8),
              3: dict(LAPSED, orders_lifetime=3), 4: dict(monetary=20)}
    why = "withheld: backtest on 2026-08-16 showed 40% of them ordered in the next 90 days"
    named = names_of(groups, withheld={"top value": "withheld: backtest showed rank 3", "lapsed": why})
    # The weaker true word: 'High value' (it is still in the top third with 1.25x the average).
    assert named.loc[1, "value_standing"] == "high" and named.loc[1, "segment_name"].startswith("High value")
    assert "'top value' withheld: backtest showed rank 3" in named.loc[1, "name_rule"]
    assert not named.loc[3, "segment_name"].startswith("Lapsed")
    assert json.loads(named.loc[3, "standing"])["withheld"] == {"lapsed": why}
    assert why in named.loc[3, "name_rule"]


def test_p_alive_can_withhold_lapsed():
    groups = {1: dict(LAPSED, orders_lifetime=3), 2: dict(monetary=600, orders_lifetime=9)}
    named = names_of(groups, alive=pd.Series({1: 0.46, 2: 0.9}))
    assert not named.loc[1, "segment_name"].startswith("Lapsed")
    assert "46% of members P(alive) >= 0.5" in named.loc[1, "name_rule"]


def test_same_standing_is_told_apart_by_a_trait_not_a_number():
    groups = {1: dict(LAPSED, recency_days=500, orders_lifetime=1, avg_order_value=50),
              2: dict(LAPSED, recency_days=520, orders_lifetime=1, avg_order_value=50, discount_share=0.6),
              3: dict(recency_days=5, monetary=500, frequency=7)}
    named = names_of(groups)
    assert named.loc[1, "segment_name"] == "Lapsed one-time buyers"
    assert named.loc[2, "segment_name"] == "Lapsed one-time buyers, discount-driven"


def test_identical_standings_are_contrasted_on_a_material_lifetime_difference():
    groups = {1: dict(LAPSED, recency_days=500, orders_lifetime=1, tenure_days=900),
              2: dict(LAPSED, recency_days=510, orders_lifetime=1, tenure_days=520),
              3: dict(recency_days=5, monetary=500, frequency=7)}
    named = names_of(groups)
    names = named["segment_name"].tolist()
    assert len(set(names)) == 3
    assert named.loc[1, "segment_name"].endswith("longer-standing")
    assert named.loc[2, "segment_name"].endswith("newer")
    assert "same name" in named.loc[1, "name_rule"]
    assert named.attrs["indistinguishable"] == []


def test_more_orders_means_more_lifetime_orders():
    # Segment 1 placed more orders in the last 12 months but fewer over its lifetime: "more orders" is lifetime.
    groups = {1: dict(orders_lifetime=2, frequency=2, tenure_days=400),
              2: dict(orders_lifetime=8, frequency=1, tenure_days=420),
              3: dict(orders_lifetime=1)}
    named = names_of(groups)
    assert named.loc[1, "segment_name"].endswith("fewer orders"), named["segment_name"].tolist()
    assert named.loc[2, "segment_name"].endswith("more orders")


def test_segments_no_named_fact_tells_apart_are_reported():
    # A cohort shop's two halves that differ only by first-purchase month (tenure 400 vs 440 days: under 20%).
    groups = {1: dict(orders_lifetime=3, tenure_days=400), 2: dict(orders_lifetime=3, tenure_days=440),
              3: dict(orders_lifetime=1)}
    named = names_of(groups)
    assert named.attrs["indistinguishable"] == [[1, 2]]
    assert "newer" not in " ".join(named["segment_name"]) and "longer-standing" not in " ".join(named["segment_name"])
    assert named.loc[1, "segment_name"].endswith("(200 customers)")


def test_rfm_only_features_name_without_behaviour_traits():
    groups = {1: dict(monetary=900, frequency=8, orders_lifetime=9), 2: dict(),
              3: dict(LAPSED, recency_days=400, orders_lifetime=1)}
    features, labels = customers(groups)
    for col in ("discount_share", "return_rate", "support_contacts", "cost_to_serve"):
        features[col] = 0.0
    columns, unavailable = available_features(features, NUMERIC_FEATURES)
    assert len(unavailable) == 7
    named = name_segments(segment_stats(features, labels, columns))
    assert all("traits\": []" in s for s in named["standing"])
    assert len(set(named["segment_name"])) == 3


def test_naming_names_the_missing_column():
    features, labels = customers({1: {}, 2: dict(monetary=5)})
    with pytest.raises(ValueError, match="recency_days"):
        segment_stats(features.drop(columns="recency_days"), labels, ())
