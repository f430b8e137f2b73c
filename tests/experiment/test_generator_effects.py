"""The generator's policy effects: off by default (output unchanged), on only for treated persons."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from include.demo.generate import DemoGenerator, PolicyEffects

#: SHA-256 (16 hex) of every table's CSV for 400 persons, seed 11, before policy effects existed.
FINGERPRINT = {
    "raw_identity_records": "740a8ee080122b72", "raw_orders": "adadde6d5c5db263",
    "raw_support_contacts": "acb673907a47fd95", "raw_product_usage": "f7bd9469ec0556ea",
    "raw_email_activity": "2654cdcb1abc8055", "raw_subscriptions": "f045718da2381900",
    "truth_persons": "1fabbf6fbf2d1071", "truth_identity": "98dbf3517d2780c8",
    "truth_future_orders": "e2f3f6469a38e1f6", "truth_planted_errors": "faef8b8a63767ba8",
}


def fingerprint(tables) -> dict[str, str]:
    return {k: hashlib.sha256(v.to_csv(index=False).encode()).hexdigest()[:16] for k, v in tables.items()}


def test_effects_off_output_is_byte_identical_to_before():
    tables = DemoGenerator(400, seed=11).generate(False)
    # The legacy-labels input (include/demo/legacy.py) came later and adds its own table and planted errors;
    # everything the generator wrote before policy effects existed must be unchanged.
    errors = tables["truth_planted_errors"]
    tables["truth_planted_errors"] = errors[errors["source_table"] != "raw_legacy_labels"].reset_index(drop=True)
    assert fingerprint({k: v for k, v in tables.items() if k in FINGERPRINT}) == FINGERPRINT


def test_effects_touch_only_treated_persons_after_the_policy_date():
    policy = PolicyEffects(dt.date(2026, 10, 1), holdout_share=0.3)
    plain = DemoGenerator(600, seed=4, end_date=dt.date(2026, 11, 14)).generate(False)
    tables = DemoGenerator(600, seed=4, end_date=dt.date(2026, 11, 14), policy=policy).generate(False)
    for name in ("raw_identity_records", "raw_product_usage", "raw_email_activity", "truth_persons"):
        assert tables[name].equals(plain[name]), name
    truth = tables["truth_policy"].set_index("person_id")
    changes = tables["truth_policy_changes"]
    assert len(changes) and (changes["event_ts"] >= "2026-10-01").all()
    who = truth.loc[changes["person_id"]]
    assert not who["holdout"].any()  # holdouts get no effect
    assert set(who.loc[changes["change"].eq("order_added").to_numpy(), "archetype"]) == {"high_value_core"}
    assert set(who.loc[changes["change"].eq("contact_removed").to_numpy(), "archetype"]) == {"costly_tail"}
    # Exactly the removed contacts are gone, exactly the added orders are new.
    removed = set(changes.loc[changes["change"] == "contact_removed", "event_id"])
    assert set(plain["raw_support_contacts"]["contact_id"]) - set(tables["raw_support_contacts"]["contact_id"]) == removed
    added = set(changes.loc[changes["change"] == "order_added", "event_id"])
    assert added <= set(tables["raw_orders"]["order_id"]) and not added & set(plain["raw_orders"]["order_id"])
    with pytest.raises(ValueError, match="unknown archetype"):
        DemoGenerator(50, policy=PolicyEffects(dt.date(2026, 10, 1), cost_archetypes=("nobody",)))
