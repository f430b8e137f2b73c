"""The demo generator: deterministic, planted truth, realistic shape."""

import numpy as np
import pandas as pd

from include.demo.generate import ARCHETYPES, DemoGenerator
from tests.conftest import DATA_END


def test_same_seed_gives_identical_tables():
    a = DemoGenerator(150, seed=5, end_date=DATA_END).generate(show_progress=False)
    b = DemoGenerator(150, seed=5, end_date=DATA_END).generate(show_progress=False)
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_like=False)


def test_other_seed_gives_other_orders():
    a = DemoGenerator(150, seed=5, end_date=DATA_END).generate(show_progress=False)
    b = DemoGenerator(150, seed=6, end_date=DATA_END).generate(show_progress=False)
    assert not a["raw_orders"]["amount"].equals(b["raw_orders"]["amount"])


def test_every_person_has_an_identity_record_and_an_order(demo_tables):
    persons = demo_tables["truth_persons"]
    ids = demo_tables["truth_identity"]
    assert set(ids["person_id"]) == set(persons["person_id"])
    assert ids.groupby("person_id").size().max() >= 3  # several ids per person occur
    assert set(ids["source_system"]) == {"web", "app", "call_centre"}
    records = demo_tables["raw_identity_records"]
    assert records["email"].isna().any() and records["phone"].isna().any()
    assert not records.duplicated(["source_system", "source_id"]).any()


def test_archetype_shares_follow_the_spec(demo_tables):
    shares = demo_tables["truth_persons"]["archetype"].value_counts(normalize=True)
    for a in ARCHETYPES:
        assert abs(shares.get(a.name, 0) - a.share) < 0.06, a.name


def test_high_value_core_earns_most_of_the_profit():
    tables = DemoGenerator(3000, seed=2, end_date=DATA_END).generate(show_progress=False)
    orders = tables["raw_orders"].merge(tables["truth_identity"], on=["source_system", "source_id"])
    orders = orders[~orders["order_id"].isin(tables["truth_planted_errors"]["source_key"])]
    orders["net"] = orders["amount"].astype(float) - orders["returned_amount"].astype(float)
    support = tables["raw_support_contacts"].merge(tables["truth_identity"], on=["source_system", "source_id"])
    persons = tables["truth_persons"].set_index("person_id")
    margin = 0.35 * orders.groupby("person_id")["net"].sum()
    cost = support.groupby("person_id")["cost"].sum()
    profit = margin.reindex(persons.index, fill_value=0) - cost.reindex(persons.index, fill_value=0)
    by_arch = profit.groupby(persons["archetype"]).sum()
    assert by_arch["high_value_core"] / by_arch[by_arch > 0].sum() > 0.45
    assert by_arch["costly_tail"] < 0  # the long tail costs more to serve than it earns


def test_future_orders_are_after_the_observation_end(demo_tables):
    end = np.datetime64(DATA_END) + np.timedelta64(1, "D")
    assert (demo_tables["truth_future_orders"]["order_ts"] >= end).all()
    planted = set(demo_tables["truth_planted_errors"]["source_key"])
    clean = demo_tables["raw_orders"][~demo_tables["raw_orders"]["order_id"].isin(planted)]
    assert (pd.to_datetime(clean["order_ts"]) < end).all()


def test_every_kind_of_bad_row_is_planted(demo_tables):
    planted = demo_tables["truth_planted_errors"]
    assert set(planted["reason"]) == {
        "unparsable_date", "non_numeric_value", "negative_value",
        "unknown_customer_id", "future_date", "duplicate_key",
    }
    assert (planted.groupby("reason").size() >= 3).all()


def test_identity_profiles_change_only_the_identity_records():
    import pytest

    from include.demo.generate import IDENTITY_PROFILES

    rich = DemoGenerator(200, seed=5, end_date=DATA_END).generate(show_progress=False)
    assert set(IDENTITY_PROFILES) == {"rich", "person_only", "contact_only"}
    for profile in ("person_only", "contact_only"):
        other = DemoGenerator(200, seed=5, end_date=DATA_END, identity_profile=profile).generate(show_progress=False)
        for name in rich:
            if name != "raw_identity_records":
                pd.testing.assert_frame_equal(rich[name], other[name])
        records = other["raw_identity_records"]
        pd.testing.assert_frame_equal(records[["source_system", "source_id"]],
                                      rich["raw_identity_records"][["source_system", "source_id"]])
    with pytest.raises(ValueError, match="identity_profile must be one of"):
        DemoGenerator(200, identity_profile="everything")


def test_person_only_records_carry_person_details_and_a_national_id_only():
    tables = DemoGenerator(300, seed=5, end_date=DATA_END, identity_profile="person_only").generate(False)
    records = tables["raw_identity_records"]
    assert list(records.columns) == ["source_system", "source_id", "first_name", "last_name", "address", "postcode",
                                     "region", "date_of_birth", "id_national", "created_at", "loaded_at"]
    dob = records["date_of_birth"].dropna()
    assert dob.str.fullmatch(r"(19|20)\d{6}").all()
    truth = tables["truth_identity"].set_index(["source_system", "source_id"])["person_id"]
    person = records.set_index(["source_system", "source_id"]).index.map(truth)
    by_person = records.assign(person=person).dropna(subset=["id_national"]).groupby("person")["id_national"]
    # Every person has one national id, apart from a few mistyped ones.
    assert (by_person.nunique() > 1).mean() < 0.05
    assert records.dropna(subset=["id_national"]).groupby("id_national")["source_id"].size().max() <= 4
    # Typos, swaps and gaps are planted: some records of one person disagree on the last name.
    assert (records.assign(person=person).groupby("person")["last_name"].nunique() > 1).any()


def test_contact_only_records_carry_contact_details_only():
    records = DemoGenerator(200, seed=5, end_date=DATA_END,
                            identity_profile="contact_only").generate(False)["raw_identity_records"]
    assert list(records.columns) == ["source_system", "source_id", "first_name", "email", "phone", "device_id",
                                     "region", "created_at", "loaded_at"]
