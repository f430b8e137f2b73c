"""Clusters that never join contradicting ids, and the run's quality estimated without truth."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.demo.person_files import contract_records, person_files
from include.identity.clustering import cluster_records, near_dates, near_identifiers
from include.identity.quality import SCOPE_ALL, check_bar, equal_id_pairs_apart, estimate_quality
from include.identity.resolve import resolve_identities
from include.identity.scoring import ScoredPairs
from tests.conftest import AS_OF
from tests.identity.test_profiles import stage_records


def test_near_values_are_one_value_keyed_twice():
    assert near_identifiers("1234567", "1234567") and near_identifiers("1234567", "1243567")
    assert near_identifiers("1234567", "1234557") and near_identifiers("1234567", "123567")
    assert not near_identifiers("1234567", "7654321") and not near_identifiers("1234567", "1299967")
    assert near_dates("1980-03-12", "1980-12-03") and not near_dates("1980-03-12", "1968-05-25")


def _links(rows):
    return pd.DataFrame(rows, columns=["unique_id_l", "unique_id_r", "match_probability"]).assign(kind="model")


def test_a_weak_link_does_not_join_contradicting_ids_it_never_saw():
    # Father (f1, f2) and son (s1, s2) share name and address; s2 lacks the id, f2 the date of birth.
    uid = pd.Series(["f1", "f2", "s1", "s2"])
    strong = pd.DataFrame({"id_national": ["111", "111", "999", None],
                           "dob": ["1936-04-29", None, "1968-05-25", "1968-05-25"]})
    links = _links([("f1", "f2", 0.9999), ("s1", "s2", 0.9999), ("f2", "s2", 0.97)])
    penalties = {"id_national": 6.6, "dob": 10.4}
    out = cluster_records(uid, links, strong=strong, penalties=penalties)
    assert out.cluster[0] == out.cluster[1] != out.cluster[2] == out.cluster[3]
    assert out.refused == 1 and out.accepted.tolist() == [True, True, False]
    # Strong enough to pay for the contradiction: joined.
    strong_link = _links([("f1", "f2", 1 - 1e-6), ("s1", "s2", 1 - 1e-6), ("f2", "s2", 1 - 1e-6)])
    assert len(set(cluster_records(uid, strong_link, strong=strong, penalties=penalties).cluster)) == 1
    # The contradiction between the link's own records was scored already: nothing more to pay.
    seen = _links([("f1", "s1", 0.97)])
    assert len(set(cluster_records(uid[[0, 2]].reset_index(drop=True), seen, strong=strong.iloc[[0, 2]],
                                   penalties=penalties).cluster)) == 1
    # Without ids or dates it is plain connected components.
    plain = cluster_records(uid, links)
    assert len(set(plain.cluster)) == 1 and plain.refused == 0
    assert plain.confidence.tolist() == [0.9999, 0.9999, 0.9999, 0.9999]


def test_equal_id_links_and_kept_groups_are_always_followed():
    uid = pd.Series(["a", "b", "c", "d"])
    strong = pd.DataFrame({"id_national": ["111", "111", "999", "999"], "dob": ["1950-01-01", "1990-01-01",
                                                                               "1970-01-01", "1970-01-01"]})
    links = _links([("a", "b", 0.2)]).assign(kind="equal_id")
    out = cluster_records(uid, links, strong=strong, penalties={"dob": 10.0, "id_national": 6.0},
                          groups=pd.Series([None, None, "K", "K"]), base_confidence=pd.Series([np.nan, np.nan, .98, .97]))
    assert out.cluster[0] == out.cluster[1] and out.cluster[2] == out.cluster[3] and out.cluster[0] != out.cluster[2]
    assert out.confidence.tolist() == [0.2, 0.2, 0.98, 0.97]


def test_quality_figures_from_links_and_clusters():
    links = _links([("a", "b", 0.99), ("c", "d", 0.97)])
    scored = ScoredPairs(links, {"pairs_scored": 10, "links": 2, "expected_true_links": 1.96,
                                 "expected_matches": 2.2, "links_near_threshold": 1, "non_links_near_threshold": 0})
    clusters = np.array([0, 0, 1, 1, 2, 3])
    strong = pd.DataFrame({"id_national": ["1", "1", "5", "777", "9", "9"]})
    q = estimate_quality(scored, clusters, strong, scope=SCOPE_ALL)
    assert q.estimated_precision == pytest.approx(0.98)
    assert q.estimated_recall == pytest.approx(1.96 / 2.2)
    assert q.links_near_threshold_share == 0.5 and q.largest_cluster == 2
    assert q.contradictory_id_cluster_share == 0.5  # cluster 1 holds "5" and "777"
    assert q.equal_id_pairs_apart_share == 0.5  # "9" is on two records in two clusters
    assert equal_id_pairs_apart(clusters, strong) == (2, 1)
    assert check_bar(q, 0.95, 0.85) is None
    assert "estimated recall 0.8909 < 0.9" in check_bar(q, 0.95, 0.9)


@pytest.mark.parametrize("with_id", [True, False])
def test_estimates_track_the_truth_on_person_files(wh, with_id):
    raw = contract_records(person_files(1500, seed=8), with_id)
    stage_records(wh, raw.drop(columns=["person_id"]))
    wh.replace_table("truth_identity", raw[["source_system", "source_id", "person_id"]])
    out = resolve_identities(wh, AS_OF)
    ev = out.evaluation.set_index("method").loc["splink"]
    q = out.quality
    # Measured (seed 8): recall estimated within 0.005 of the truth, precision within 0.01.
    assert abs(q.estimated_recall - ev["pairwise_recall"]) < 0.01
    assert abs(q.estimated_precision - ev["pairwise_precision"]) < 0.015
    assert ev["pairwise_f1"] >= (0.995 if with_id else 0.975)
    run = wh.query_df("SELECT * FROM identity_runs WHERE as_of_date = :d", {"d": AS_OF}).iloc[0]
    assert run["estimated_precision"] == pytest.approx(q.estimated_precision)
    assert (run["contradictory_id_cluster_share"] is None or pd.isna(run["contradictory_id_cluster_share"])) != with_id


def test_a_single_source_shop_whose_ids_are_the_customers_is_not_degraded(wh):
    from include.demo.transactions_only import generate_transactions_only

    raw = generate_transactions_only(300, seed=3)["raw_identity_records"]
    stage_records(wh, raw)
    out = resolve_identities(wh, AS_OF)
    assert out.degraded_reason is None
    assert set(out.result.identity_map["match_method"]) == {"source_id"}
    assert out.result.identity_map["customer_key"].nunique() == len(raw)
    run = wh.query_df("SELECT * FROM identity_runs WHERE as_of_date = :d", {"d": AS_OF}).iloc[0]
    assert not bool(run["degraded"]) and run["method"] == "source_id"
    # Two systems that cannot be linked are degraded, as before.
    two = raw.assign(source_system=np.where(np.arange(len(raw)) % 2, "web", "shop"))
    stage_records(wh, two, as_of=AS_OF + dt.timedelta(days=7))
    assert resolve_identities(wh, AS_OF + dt.timedelta(days=7)).degraded_reason


def test_person_files_are_deterministic_and_shaped_like_febrl():
    files = person_files(300, seed=2)
    again = person_files(300, seed=2)
    pd.testing.assert_frame_equal(files, again)
    assert (files.groupby("source_system").size() == 300).all()
    assert files["date_of_birth"].dropna().str.fullmatch(r"\d{8}").all()
    # Duplicates differ from their original (a modification can blank a field that was empty already).
    from include.demo.person_files import FIELDS

    a = files[files["source_system"] == "file_a"].set_index("person_id")
    b = files[files["source_system"] == "file_b"].set_index("person_id")
    same = (a[list(FIELDS)].fillna("") == b[list(FIELDS)].fillna("")).all(axis=1)
    assert same.mean() < 0.05
    one = person_files(300, layout="one_file", seed=2)
    assert one["source_system"].nunique() == 1 and one["person_id"].value_counts().max() <= 6
    raw = contract_records(files)
    assert {"first_name", "last_name", "address", "postcode", "region", "date_of_birth", "id_national"} <= set(raw)
    assert raw["address"].notna().mean() > 0.95
