"""Incremental identity: a week's new and changed records linked against last week's clusters.

Person files (:mod:`include.demo.person_files`) are staged for two weeks: the
second holds every record of the first but some removed and some re-keyed,
plus the persons' later records. Week two resolved incrementally must give
what a full re-link with the same model gives.
"""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.demo.person_files import contract_records, person_files
from include.identity import incremental
from include.identity.incremental import BaseRun, identity_changes, plan_incremental
from include.identity.resolve import IdentityQualityError, customer_key_for, resolve_identities
from tests.conftest import AS_OF
from tests.identity.test_profiles import stage_records

WEEK1, WEEK2 = AS_OF - dt.timedelta(days=7), AS_OF


@pytest.fixture(scope="module")
def weeks():
    """Raw records of week 1 and week 2, and the truth of both."""
    raw = contract_records(person_files(1200, layout="one_file", seed=21))
    raw["created_at"] = pd.to_datetime(raw["created_at"])
    cut = raw["created_at"].quantile(0.8)
    week1 = raw[raw["created_at"] <= cut].copy()
    rng = np.random.default_rng(3)
    week2 = raw.copy()
    # Re-keyed records: a surname typo on 15 records of week 1; removed: 8 records of week 1.
    old = week2.index[week2["created_at"] <= cut]
    retyped = rng.choice(old, 15, replace=False)
    week2.loc[retyped, "last_name"] = week2.loc[retyped, "last_name"].fillna("x") + "e"
    removed = rng.choice(np.setdiff1d(old, retyped), 8, replace=False)
    week2 = week2.drop(index=removed)
    truth = raw[["source_system", "source_id", "person_id"]].copy()
    return week1, week2, truth, len(retyped), len(removed)


def _stage(wh, raw, date, truth):
    stage_records(wh, raw.drop(columns=["person_id"]), as_of=date)
    wh.replace_table("truth_identity", truth)


def _partition(run):
    m = run.result.identity_map
    return pd.Series(m["customer_key"].to_numpy(), index=(m["source_system"] + ":" + m["source_id"]).to_numpy())


def test_incremental_week_equals_a_full_relink_with_the_same_model(wh, weeks):
    week1, week2, truth, n_retyped, n_removed = weeks
    _stage(wh, week1, WEEK1, truth)
    first = resolve_identities(wh, WEEK1)
    assert first.mode == "full" and first.model_trained
    _stage(wh, week2, WEEK2, truth)
    inc = resolve_identities(wh, WEEK2, model=first.model, model_trained_for=WEEK1)
    assert inc.mode == "incremental" and inc.base_as_of_date == WEEK1
    assert inc.plan_counts["records_changed"] == n_retyped
    assert inc.plan_counts["records_removed"] == n_removed
    assert inc.plan_counts["records_new"] == len(week2) - (len(week1) - n_removed)
    # Far fewer records scored than a full re-link scores.
    run = wh.query_df("SELECT * FROM identity_runs WHERE as_of_date = :d", {"d": WEEK2}).iloc[0]
    assert run["mode"] == "incremental" and pd.Timestamp(run["base_as_of_date"]).date() == WEEK1
    assert run["records_relinked"] < 0.5 * len(week2)
    assert run["model_id"] == incremental.model_id(first.model)
    full = resolve_identities(wh, WEEK2, model=first.model, relink="full")
    assert full.mode == "full" and "identity_relink = full" in full.mode_reason
    a, b = _partition(inc), _partition(full).reindex(_partition(inc).index)
    # Same clusters and, keys being a function of the clusters, the same keys.
    assert (a == b).all(), f"{int((a != b).sum())} records differ"
    # Only the new and re-keyed records were normalised; the rest came from week 1's kept state.
    assert inc.result.metrics["records_normalised"] == n_retyped + inc.plan_counts["records_new"]
    assert full.result.metrics["records_normalised"] == len(week2)
    # Golden records, keys since and fingerprints as the full re-link gives them, though the
    # incremental run rebuilt only the customers whose clusters changed.
    assert inc.result.metrics["customers_rebuilt"] < 0.5 * len(inc.result.customers)
    pd.testing.assert_frame_equal(inc.result.customers.sort_values("customer_key", ignore_index=True),
                                  full.result.customers)
    cols = ["source_system", "source_id", "customer_key", "key_since", "record_hash"]
    pd.testing.assert_frame_equal(inc.result.identity_map[cols], full.result.identity_map[cols])
    # The kept state of week 2 holds what a full pass normalises, whichever way it was built.
    state = wh.query_df(f"SELECT * FROM {incremental.STATE_TABLE} WHERE as_of_date = :d ORDER BY source_system, "
                        "source_id", {"d": WEEK2})
    assert len(state) == len(week2)
    pd.testing.assert_frame_equal(state.drop(columns=["as_of_date"]).astype("string"),
                                  full.state.drop(columns=["as_of_date"]).astype("string"), check_dtype=False)
    ev_inc = inc.evaluation.set_index("method").loc["splink"]
    ev_full = full.evaluation.set_index("method").loc["splink"]
    assert ev_inc["pairwise_f1"] == pytest.approx(ev_full["pairwise_f1"], abs=1e-12)
    assert ev_inc["pairwise_f1"] >= 0.99
    # Every record of week 1 that is unchanged keeps its key unless its cluster merged or split.
    keys1 = _partition(first)
    same = a.reindex(keys1.index).dropna()
    moved = set(same.index[same != keys1.reindex(same.index)])
    changes = inc.changes
    explained = set(changes["customer_key"])
    assert {keys1[m] for m in moved} <= explained


def test_a_base_without_kept_state_is_linked_in_full_once(wh, weeks, caplog):
    week1, week2, truth, *_ = weeks
    _stage(wh, week1, WEEK1, truth)
    first = resolve_identities(wh, WEEK1)
    # A warehouse from before the state table: week 1's run kept no normalised records.
    wh.run_script(f"DELETE FROM {incremental.STATE_TABLE}")
    _stage(wh, week2, WEEK2, truth)
    with caplog.at_level("INFO", logger="include.identity.resolve"):
        second = resolve_identities(wh, WEEK2, model=first.model, model_trained_for=WEEK1)
    assert second.mode == "full" and incremental.STATE_TABLE in second.mode_reason
    assert any(incremental.STATE_TABLE in r.getMessage() and "full link" in r.getMessage() for r in caplog.records)
    assert second.result.metrics["records_normalised"] == len(week2)
    # The full pass kept its state: the next week starts from it and normalises nothing unchanged.
    week3 = WEEK2 + dt.timedelta(days=7)
    _stage(wh, week2, week3, truth)
    third = resolve_identities(wh, week3, model=first.model, model_trained_for=WEEK1)
    assert third.mode == "incremental" and third.result.metrics["records_normalised"] == 0
    assert third.result.metrics["customers_rebuilt"] == 0
    # Every golden record is week 2's, read back from the warehouse (text as object there).
    by_key = {"by": "customer_key", "ignore_index": True}
    pd.testing.assert_frame_equal(third.result.customers.drop(columns=["as_of_date"]).sort_values(**by_key),
                                  second.result.customers.drop(columns=["as_of_date"]).sort_values(**by_key),
                                  check_dtype=False)
    assert (third.result.identity_map["customer_key"] == second.result.identity_map["customer_key"]).all()


def test_changes_name_the_oldest_key_as_survivor_of_a_merge():
    before = pd.DataFrame({"member": ["w:1", "a:1", "w:2", "w:3", "a:3"],
                           "customer_key": ["K1", "K1", "K2", "K3", "K3"]})
    # K2 joins K1 (K1 older), K3 splits: a:3 leaves for a new key; a new record w:4 is no change.
    after = pd.DataFrame({"member": ["w:1", "a:1", "w:2", "w:3", "a:3", "w:4"],
                          "customer_key": ["K1", "K1", "K1", "K3", "K9", "K4"]})
    out = identity_changes(before, after, WEEK2)
    assert out[["change", "customer_key", "survivor_key", "records"]].values.tolist() == [
        ["merge", "K2", "K1", 1], ["split", "K3", "K9", 1]]
    # A key whose records went two ways: a merge into the larger part, a split for the rest.
    after2 = pd.DataFrame({"member": ["w:1", "a:1", "w:2", "w:3", "a:3"],
                           "customer_key": ["K1", "K1", "K2", "K7", "K8"]})
    before2 = before.assign(customer_key=["K1", "K1", "K2", "K5", "K5"])
    out2 = identity_changes(before2, after2, WEEK2)
    assert out2[["change", "customer_key", "survivor_key"]].values.tolist() == [
        ["merge", "K5", "K7"], ["split", "K5", "K8"]]
    assert identity_changes(before, before, WEEK2).empty


def test_plan_keeps_untouched_clusters_and_regroups_the_rest():
    base = BaseRun(WEEK1, "m1", WEEK1, ("first_name",), pd.DataFrame({
        "member": ["w:1", "a:1", "w:2", "a:2", "w:3"], "customer_key": ["K1", "K1", "K2", "K2", "K3"],
        "cluster_confidence": [0.99, 0.99, 0.97, 0.97, 1.0], "record_hash": ["h1", "h2", "h3", "h4", "h5"]}))
    # a:1 changed, w:3 removed, n:1 new; K1 is regrouped (w:1 unchanged), K2 kept.
    plan = plan_incremental(pd.Series(["w:1", "a:1", "w:2", "a:2", "n:1"]),
                            pd.Series(["h1", "hX", "h3", "h4", "h6"]), base)
    assert sorted(plan.new_ids) == ["a:1", "n:1"]
    assert plan.groups.tolist()[2:4] == ["K2", "K2"] and plan.groups.isna().tolist() == [True, True, False, False, True]
    assert plan.regroup.values.tolist() == [["w:1", "K1"]]
    assert plan.counts == {"records_new": 1, "records_changed": 1, "records_removed": 1, "clusters_kept": 1,
                           "clusters_regrouped": 2}


def test_a_new_model_or_new_columns_relink_everyone(wh, weeks):
    week1, _, truth, *_ = weeks
    _stage(wh, week1, WEEK1, truth)
    first = resolve_identities(wh, WEEK1)
    _stage(wh, week1.drop(columns=["id_national"]), WEEK2, truth)
    out = resolve_identities(wh, WEEK2, model=first.model)
    # The model compares the national id, which this week has no data in: retrained, full.
    assert out.model_trained and out.mode == "full" and "model differs" in out.mode_reason


def test_incremental_keys_match_the_earliest_record_rule(wh, weeks):
    week1, week2, truth, *_ = weeks
    _stage(wh, week1, WEEK1, truth)
    first = resolve_identities(wh, WEEK1)
    _stage(wh, week2, WEEK2, truth)
    inc = resolve_identities(wh, WEEK2, model=first.model)
    m = inc.result.identity_map.assign(member=lambda f: f["source_system"] + ":" + f["source_id"])
    created = week2.assign(member=week2["source_system"] + ":" + week2["source_id"]).set_index("member")["created_at"]
    m["created"] = m["member"].map(created)
    earliest = m.sort_values(["created", "member"]).drop_duplicates("customer_key")
    assert (earliest["member"].map(customer_key_for) == earliest["customer_key"]).all()


def test_below_the_quality_bar_degrades_or_fails(wh, weeks):
    week1, _, truth, *_ = weeks
    _stage(wh, week1, WEEK1, truth)
    out = resolve_identities(wh, WEEK1, min_estimated_precision=0.99999, min_estimated_recall=0.99999)
    assert out.degraded_reason and "identity quality below the bar" in out.degraded_reason
    run = wh.query_df("SELECT * FROM identity_runs WHERE as_of_date = :d", {"d": WEEK1}).iloc[0]
    assert bool(run["degraded"]) and "estimated" in run["quality_below_bar"]
    with pytest.raises(IdentityQualityError, match="Nothing was written"):
        resolve_identities(wh, WEEK1, model=out.model, min_estimated_recall=0.99999, below_bar="fail")


def test_stage_chains_weeks_on_the_base_runs_model(warehouse_url, weeks, tmp_path, monkeypatch):
    from include.runtime import tracking
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.runtime.warehouse import Warehouse
    from include.stages.identity import resolve_identity

    # An MLflow store of its own: the models logged here must not be found by other tests' runs of these dates.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    week1, week2, truth, *_ = weeks
    with Warehouse(warehouse_url) as wh:
        _stage(wh, week1, WEEK1, truth)
        _stage(wh, week2, WEEK2, truth)
    first = resolve_identity(RunInfo("test_identity_chain", "week1", WEEK1, PipelineSettings(), warehouse_url))
    assert first["mode"].startswith("full") and "trained here" in first["model"]
    second = resolve_identity(RunInfo("test_identity_chain", "week2", WEEK2, PipelineSettings(), warehouse_url))
    assert second["mode"].startswith("incremental") and second["model"].startswith(f"reused from the run of {WEEK1}")
    assert second["incremental"] == 1.0 and second["estimated_recall"] > 0.95
    with Warehouse(warehouse_url) as wh:
        runs = wh.query_df("SELECT * FROM identity_runs ORDER BY as_of_date")
    assert runs["model_id"].nunique() == 1 and pd.Timestamp(runs["model_trained_for"].iloc[1]).date() == WEEK1
    assert runs["estimated_precision"].notna().all() and runs["estimated_scope"].iloc[1].startswith("pairs of new")
    # The model ages out: a limit below the week retrains and re-links everyone.
    third = resolve_identity(RunInfo("test_identity_chain", "week2-aged", WEEK2,
                                     PipelineSettings(identity_model_max_age_days=3), warehouse_url))
    assert third["mode"].startswith("full") and "days ago" in third["model"]
    tags = tracking.client().get_run(RunInfo("test_identity_chain", "week2", WEEK2, PipelineSettings(),
                                             warehouse_url).mlflow_run()).data.tags
    assert tags["identity_mode"].startswith("incremental")


def test_only_symmetric_blocking_rules_are_joined_one_way():
    from include.identity.scoring import _symmetric

    # New records are joined to the base once for a rule like these ...
    assert _symmetric('l."email" = r."email"')
    assert _symmetric('(SUBSTRING(l."first_name", 1, 1) = SUBSTRING(r."first_name", 1, 1)) AND (l."postcode" = r."postcode")')
    # ... and both ways for names the wrong way round, or anything not a conjunction of equalities.
    assert not _symmetric('l."dob" = r."dob" AND l."first_name" = r."last_name"')
    assert not _symmetric('l."a" = r."a" OR l."b" = r."b"')
    assert not _symmetric('l."x" >= r."x"')


def test_a_changed_invalid_date_of_birth_text_is_normalised_again():
    """A record whose date of birth extract nulled keeps its text for linkage: a new text is a change."""
    base = pd.DataFrame({"source_system": ["crm", "crm"], "source_id": ["1", "2"], "first_name": ["ann", "bob"],
                         "last_name": ["lee", "kay"], "date_of_birth": [None, None],
                         "date_of_birth_text": ["19450493", None]})
    changed = base.assign(date_of_birth_text=["19450494", None])
    before, after = incremental.source_hashes(base), incremental.source_hashes(changed)
    assert before.iloc[0] != after.iloc[0]
    assert before.iloc[1] == after.iloc[1]
