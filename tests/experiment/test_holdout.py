"""Holdout assignment: stable across runs, re-runs and backfills; reshuffled by another experiment name;
holdout customers never receive the playbook action in any CRM target."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from include.crm.contract import CURRENT_OUTBOX_SQL
from include.experiment.build import ExperimentSettings, run_experiment
from include.experiment.holdout import holdout_draw, holdout_flags, is_holdout
from include.runtime.warehouse import Warehouse
from tests.crm_servers import HubSpotServer, SalesforceServer, WebhookReceiver, write_identity_map
from tests.published import write_published

WEEKS = [dt.date(2026, 10, 3) + dt.timedelta(weeks=i) for i in range(3)]
NAMES = {1: "High-value core", 2: "Loyal potential", 3: "Costly tail"}


def publish(url: str, date: dt.date, keys: list[str], shift: int = 0) -> None:
    """Published labels, CLV and priorities (with a playbook action) of ``keys``; ``shift`` moves segments."""
    write_published(url, date, keys, np.array([1 + (i + shift) % 3 for i in range(len(keys))]), NAMES)


def holdouts(url: str, date: dt.date) -> dict[str, bool]:
    with Warehouse(url) as wh:
        frame = wh.query_df("SELECT customer_key, holdout FROM customer_holdout WHERE as_of_date = :d", {"d": date})
    return dict(zip(frame["customer_key"], frame["holdout"].astype(bool), strict=True))


def test_draw_is_a_pure_function_of_experiment_and_key():
    keys = [f"C{i:015x}" for i in range(4000)]
    flags = holdout_flags("exp-a", keys, 0.1)
    assert 0.08 < flags.mean() < 0.12
    assert (flags == holdout_flags("exp-a", keys, 0.1)).all()
    other = holdout_flags("exp-b", keys, 0.1)
    assert 0.08 < other.mean() < 0.12 and (flags != other).sum() > 400  # another name reshuffles
    assert is_holdout("exp-a", keys[0], 0.1) == bool(flags[0])
    assert holdout_draw("exp-a", keys[0]) == holdout_draw("exp-a", keys[0])
    with pytest.raises(ValueError, match="holdout share"):
        is_holdout("exp-a", keys[0], 1.0)


def test_holdout_stable_across_runs_reruns_backfills_and_segment_moves(tmp_path):
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    keys = [f"C{i:015x}" for i in range(600)]
    settings = ExperimentSettings(experiment_name="exp-a", holdout_share=0.2)
    # Weekly runs in order, customers changing segment every week.
    for i, day in enumerate(WEEKS):
        publish(url, day, keys, shift=i)
        with Warehouse(url) as wh:
            run_experiment(wh, day, settings)
    first = holdouts(url, WEEKS[0])
    assert 0.15 < np.mean(list(first.values())) < 0.25
    assert all(holdouts(url, d) == first for d in WEEKS)
    # Every segment gets its share of holdouts.
    with Warehouse(url) as wh:
        per_segment = wh.query_df("SELECT segment_id, AVG(CAST(holdout AS DOUBLE)) AS share FROM customer_holdout "
                                  "WHERE as_of_date = :d GROUP BY segment_id", {"d": WEEKS[-1]})
        assert per_segment["share"].between(0.1, 0.3).all()
        # Re-running a date replaces its rows: same flags, no duplicates.
        run_experiment(wh, WEEKS[1], settings)
        assert wh.scalar("SELECT COUNT(*) FROM customer_holdout WHERE as_of_date = :d", {"d": WEEKS[1]}) == 600
        # A backfill of an earlier date, with new customers among them, keeps everyone's flag.
        backfill = WEEKS[0] - dt.timedelta(weeks=1)
        publish(url, backfill, keys + ["Cnew000000000001"], shift=2)
        run_experiment(wh, backfill, settings)
        policies = wh.query_df("SELECT as_of_date, policy_start, policy_hash FROM policy_runs ORDER BY as_of_date")
    assert holdouts(url, WEEKS[1]) == first
    assert {k: v for k, v in holdouts(url, backfill).items() if k in first} == first
    # The policy record: one playbook hash; a backfilled earlier date under it moves the start back.
    assert policies["policy_hash"].nunique() == 1
    assert pd.Timestamp(policies["policy_start"].iloc[0]).date() == backfill
    # Another experiment name reshuffles the holdout.
    with Warehouse(url) as wh:
        run_experiment(wh, WEEKS[2], ExperimentSettings(experiment_name="exp-b", holdout_share=0.2))
    reshuffled = holdouts(url, WEEKS[2])
    assert sum(reshuffled[k] != first[k] for k in keys) > 60


def test_holdouts_never_receive_the_action_in_any_crm_target(tmp_path, monkeypatch, airflow_db):
    from segmentation_providers.operators.push_segments import PushSegmentsOperator

    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    keys = [f"C{i:015x}" for i in range(300)]
    day = WEEKS[0]
    publish(url, day, keys)
    with Warehouse(url) as wh:
        run_experiment(wh, day, ExperimentSettings(experiment_name="exp-a", holdout_share=0.2))
    flags = holdouts(url, day)
    assert 40 < sum(flags.values()) < 80

    def push(target: str) -> dict:
        return PushSegmentsOperator(task_id=f"push_{target}", target=target, as_of_date=day.isoformat(),
                                    warehouse_url=url, batch_size=100,
                                    hook_kwargs={"backoff_s": 0.05, **({"poll_interval_s": 0.01}
                                                                       if target == "salesforce" else {})}
                                    ).execute({})

    def conn(name: str, host: str, password: str) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(
            {"conn_type": "http", "host": host, "password": password, "extra": {}}))

    # HubSpot and Salesforce hold their own records (one contact per customer, loaded as identity records).
    hub_ids = {str(1001 + i): k for i, k in enumerate(keys)}
    sf_ids = {f"003{i:012d}AAA": k for i, k in enumerate(keys)}
    write_identity_map(url, day, [("hubspot", r, k) for r, k in hub_ids.items()]
                       + [("salesforce", r, k) for r, k in sf_ids.items()])
    sent: dict[str, dict[str, tuple[bool, str]]] = {}
    with HubSpotServer(contacts={r: {} for r in hub_ids}) as hub, \
            SalesforceServer(records={r: {"LastName": "x"} for r in sf_ids}) as sf, WebhookReceiver() as hook:
        conn("crm_hubspot", hub.url, hub.token)
        conn("crm_salesforce", sf.url, sf.token)
        conn("crm_webhook", hook.url, hook.secret)
        for target in ("outbox", "webhook", "hubspot", "salesforce"):
            assert push(target)["acknowledged"] == 300
        sent["hubspot"] = {hub_ids[k]: (p["holdout"] == "true", p["segment_action"])
                           for k, p in hub.contacts.items()}
        # Salesforce ignores an empty value on update: an action is cleared with #N/A (null).
        sent["salesforce"] = {sf_ids[k]: (r["Segment_Holdout__c"] == "true", r["Segment_Action__c"] or "")
                              for k, r in sf.records.items()}
        sent["webhook"] = {r["customer_key"]: (r["holdout"], r["segment_action"])
                           for recs in hook.deliveries.values() for r in recs}
    with Warehouse(url) as wh:
        outbox = wh.query_df(CURRENT_OUTBOX_SQL, {"target": "outbox"})
    sent["outbox"] = {r.customer_key: (json.loads(r.payload)["holdout"], json.loads(r.payload)["segment_action"])
                      for r in outbox.itertuples()}
    for target, records in sent.items():
        assert set(records) == set(keys), target
        for key, (holdout, action) in records.items():
            assert holdout == flags[key], (target, key)
            assert (action == "") == holdout, (target, key, action)  # the action goes to the treated only


def test_push_waits_for_the_holdout_once_the_experiment_runs(tmp_path, airflow_db):
    from segmentation_providers.operators.push_segments import PushSegmentsOperator

    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    keys = [f"C{i:015x}" for i in range(50)]
    publish(url, WEEKS[0], keys)
    with Warehouse(url) as wh:
        run_experiment(wh, WEEKS[0], ExperimentSettings(experiment_name="exp-a"))
    publish(url, WEEKS[1], keys, shift=1)  # labels and actions, but no holdout recorded yet

    def push():
        return PushSegmentsOperator(task_id="push_outbox", target="outbox", as_of_date=WEEKS[1].isoformat(),
                                    warehouse_url=url).execute({})

    with pytest.raises(ValueError, match="customer_holdout has no rows for as_of_date=2026-10-10"):
        push()
    with Warehouse(url) as wh:
        run_experiment(wh, WEEKS[1], ExperimentSettings(experiment_name="exp-a"))
    assert push()["label_date"] == WEEKS[1].isoformat()


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_customers_count_in_the_segment_of_their_first_date_under_the_policy(tmp_path, kind):
    """Intention to treat, in both dialects: the segment of the first date under the policy (as published
    now, after any relabelling), the arm, and customers no longer published still counted."""
    from include.experiment.build import SQL, outcome_params
    from tests.warehouses import warehouse

    rows = [("2026-09-05", "k0", 9, "before the policy", False), ("2026-09-12", "k1", 1, "a", False),
            ("2026-09-19", "k1", 2, "b", False), ("2026-09-19", "k2", 2, "b", True),
            ("2026-09-12", "k3", 3, "c", True)]  # k3 is not published on the 19th
    with warehouse(kind, tmp_path) as wh:
        wh.ensure_schema()
        for day, key, segment_id, name, holdout in rows:
            wh.run_script("INSERT INTO customer_holdout (as_of_date, experiment_name, customer_key, segment_id, "
                          "segment_name, holdout) VALUES (:d, 'e', :k, :s, :n, :h)",
                          {"d": day, "k": key, "s": segment_id, "n": name, "h": holdout})
        # A later run's id fold relabelled the 12th: k1's segment there is now published as id 5.
        wh.run_script("INSERT INTO customer_segments (as_of_date, customer_key, segment_id, segment_name) "
                      "VALUES ('2026-09-12', 'k1', 5, 'a (relabelled)')")
        params = outcome_params(dt.date(2026, 9, 19), dt.date(2026, 9, 12), ExperimentSettings(experiment_name="e"))
        frame = wh.query_df(SQL["customer_outcomes"], params)
    got = {r.customer_key: (int(r.segment_id), r.segment_name, bool(r.holdout)) for r in frame.itertuples()}
    assert got == {"k1": (5, "a (relabelled)", False), "k2": (2, "b", True), "k3": (3, "c", True)}
