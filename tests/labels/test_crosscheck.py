"""The labels' CLV check and the fit's stability gate as plain functions (no warehouse, no Airflow)."""

import json

import pandas as pd
import pytest

from include.labels.crosscheck import check_labels
from include.runtime.errors import WarehouseError
from include.segmentation.model import stability_gate


def _labels(standings: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({
        "segment_id": [1, 2, 3], "segment_name": ["Top value", "Regulars", "Lapsed buyers"],
        "customers": [100, 300, 600], "revenue_per_customer": [900.0, 200.0, 10.0],
        "value_standing": ["top", "middle", "low"], "standing": [json.dumps(s) for s in standings]})


def _clv(alive_share_lapsed: float, mean_clv=(800.0, 150.0, 5.0)) -> pd.DataFrame:
    return pd.DataFrame({"segment_id": [1, 2, 3], "mean_clv_365d": list(mean_clv),
                         "total_clv_365d": [m * n for m, n in zip(mean_clv, (100, 300, 600), strict=True)],
                         "mean_clv_365d_low": list(mean_clv), "mean_clv_365d_high": list(mean_clv),
                         "mean_p_alive": [0.9, 0.7, 0.2], "alive_share": [0.95, 0.8, alive_share_lapsed]})


def test_a_lapsed_label_whose_members_the_model_calls_alive_stays_unresolved():
    labels = _labels([{}, {}, {"recency": "lapsed"}])
    ok = check_labels(labels, _clv(0.10), None)
    assert ok.checked and not ok.unresolved and not ok.rows["flag"].any()
    contradicted = check_labels(labels, _clv(0.40), None)
    assert len(contradicted.unresolved) == 1 and "Lapsed buyers" in contradicted.unresolved[0]
    assert "40% of members have P(alive) >= 0.5" in contradicted.rows.set_index("segment_id").loc[3, "reason"]


def test_a_claim_the_labeller_withheld_on_clv_is_flagged_but_resolved():
    labels = _labels([{}, {"withheld": {"high value": "CLV ranks it 3 of 3"}}, {}])
    check = check_labels(labels, _clv(0.0), None)
    assert not check.unresolved and check.rows.set_index("segment_id").loc[2, "flag"]
    assert "'high value' withheld by the labeller" in check.rows.set_index("segment_id").loc[2, "reason"]


def test_without_clv_every_label_says_it_could_not_check():
    check = check_labels(_labels([{}, {}, {}]), None, "CLV not available: no interior maximum")
    assert not check.checked and (check.rows["reason"] == "could not check: CLV not available: no interior maximum").all()
    with pytest.raises(WarehouseError, match="standing"):
        check_labels(_labels([{}, {}, {}]).drop(columns=["standing"]), None, "x")


def test_the_stability_gate_names_each_unstable_segment():
    profiles = pd.DataFrame({"fit_segment": [1, 2], "customers": [1200, 40], "jaccard": [0.91, 0.55]})
    assert stability_gate(profiles, 0.5) is None
    reason = stability_gate(profiles, 0.75)
    assert reason == "fit segment 2 (40 customers) bootstrap Jaccard 0.55 < min_jaccard 0.75"
