"""Weekly experiment runs on generated data with planted policy effects, running only the stages lift needs.

The full DAG per weekly date is too slow for a test; lift needs only what the
experiment stage reads. Per date this stages the generator's raw orders and
support contacts as extract would (rows up to the date, parsable, first copy
of a key), resolves identity perfectly (every record of a person gets the
person's expected key, the same function the generator uses to decide who is
treated), publishes the planted archetype as the segment, gives each segment
a playbook action, then runs :func:`include.experiment.build.run_experiment`,
the DAG task's code. ``benchmarks/bench_lift.py`` runs the same at full size.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from include.demo.generate import DemoGenerator, PolicyEffects, expected_customer_keys
from include.experiment.build import SQL, ExperimentSettings, outcome_params, run_experiment
from include.experiment.lift import BINARY, METRICS, cuped, difference_interval, simultaneous_intervals
from include.runtime.warehouse import Warehouse

STAGE_ORDERS = """
INSERT INTO stg_orders
SELECT CAST(:d AS DATE), order_id, source_system, source_id, TRY_CAST(order_ts AS TIMESTAMP),
    TRY_CAST(amount AS DOUBLE), TRY_CAST(discount AS DOUBLE), TRY_CAST(returned_amount AS DOUBLE), channel, category
FROM raw_orders
WHERE TRY_CAST(order_ts AS TIMESTAMP) < :cutoff AND TRY_CAST(amount AS DOUBLE) >= 0
QUALIFY ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY source_id) = 1
"""
STAGE_SUPPORT = """
INSERT INTO stg_support_contacts
SELECT CAST(:d AS DATE), contact_id, source_system, source_id, TRY_CAST(contact_ts AS TIMESTAMP), channel,
    TRY_CAST(cost AS DOUBLE)
FROM raw_support_contacts WHERE TRY_CAST(contact_ts AS TIMESTAMP) < :cutoff
"""
IDENTITY = """
INSERT INTO identity_map (as_of_date, source_system, source_id, customer_key, cluster_confidence, match_method)
SELECT CAST(:d AS DATE), r.source_system, r.source_id, k.customer_key, 1.0, 'truth'
FROM raw_identity_records r
JOIN truth_identity t ON t.source_system = r.source_system AND t.source_id = r.source_id
JOIN person_keys k ON k.person_id = t.person_id
WHERE CAST(r.created_at AS TIMESTAMP) < :cutoff
"""
PUBLISH = """
INSERT INTO customer_segments (as_of_date, customer_key, segment_id, segment_name, model_run_id)
SELECT DISTINCT CAST(:d AS DATE), k.customer_key, k.segment_id, k.archetype, 'truth'
FROM person_keys k JOIN identity_map i ON i.as_of_date = :d AND i.customer_key = k.customer_key
"""
PRIORITY = """
INSERT INTO customer_priority (as_of_date, customer_key, segment_id, segment_name, value_tier, priority, action)
SELECT as_of_date, customer_key, segment_id, segment_name, 'medium', 'medium', 'Playbook action for ' || segment_name
FROM customer_segments WHERE as_of_date = :d
"""


def generate(customers: int, seed: int, first_run: dt.date, weeks: int, **effects) -> dict[str, pd.DataFrame]:
    """Generated tables ending ``weeks`` after ``first_run``, effects from the day after it."""
    end = first_run + dt.timedelta(weeks=weeks)
    policy = PolicyEffects(first_run + dt.timedelta(days=1), **effects)
    return DemoGenerator(customers, seed=seed, end_date=end, policy=policy).generate(False)


def load(url: str, tables: dict[str, pd.DataFrame]) -> None:
    """Write the raw and truth tables, the person -> key map and the pipeline's schema."""
    records = tables["raw_identity_records"].merge(tables["truth_identity"], on=["source_system", "source_id"])
    records["_created"] = pd.to_datetime(records["created_at"])
    keys = expected_customer_keys(records)
    persons = tables["truth_persons"]
    names = sorted(persons["archetype"].unique())
    person_keys = pd.DataFrame({"person_id": persons["person_id"], "customer_key": keys.reindex(persons["person_id"]).to_numpy(),
                                "archetype": persons["archetype"],
                                "segment_id": [names.index(a) + 1 for a in persons["archetype"]]})
    with Warehouse(url) as wh:
        wh.ensure_schema()
        for name in ("raw_identity_records", "raw_orders", "raw_support_contacts", "truth_identity",
                     "truth_persons", "truth_policy", "truth_policy_changes"):
            wh.replace_table(name, tables[name])
        wh.replace_table("person_keys", person_keys)


DELIVERED = """
INSERT INTO crm_push_log (target, run_id, as_of_date, batch, idempotency_key, customers, acknowledged, failed,
    status, response_code, attempts, detail, logged_at, label_date)
SELECT 'outbox', 'harness', CAST(:d AS DATE), 1, 'harness-' || :day, COUNT(*), COUNT(*), 0, 'ok', 200, 1,
    'the DAG push after the run, as its audit row records it', CURRENT_TIMESTAMP, CAST(:d AS DATE)
FROM customer_segments WHERE as_of_date = :d
"""


def run_week(url: str, day: dt.date, settings: ExperimentSettings, playbook_path=None,
             deliver: bool = True) -> pd.DataFrame:
    """Stage, resolve, publish and run the experiment stage for ``day``; return its lift rows.

    ``deliver``: then record, as the DAG's push after the experiment does, that the date's labels reached
    a CRM target (the policy starts on the first delivered date).
    """
    params = {"d": day, "cutoff": dt.datetime.combine(day + dt.timedelta(days=1), dt.time())}
    with Warehouse(url) as wh:
        with wh.begin() as conn:
            for table in ("stg_orders", "stg_support_contacts", "identity_map", "customer_segments",
                          "customer_priority"):
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE as_of_date = '{day.isoformat()}'")
            for sql in (STAGE_ORDERS, STAGE_SUPPORT, IDENTITY, PUBLISH, PRIORITY):
                wh.run_script(sql, params, conn=conn)
        lift = run_experiment(wh, day, settings, playbook_path)["lift"]
        if deliver:
            record_delivery(wh, day)
        return lift


def record_delivery(wh: Warehouse, day: dt.date) -> None:
    """The audit row an acknowledged push of ``day``'s labels leaves in ``crm_push_log`` (once per date)."""
    with wh.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM crm_push_log WHERE idempotency_key = 'harness-{day.isoformat()}'")
        wh.run_script(DELIVERED, {"d": day, "day": day.isoformat()}, conn=conn)


PERSON_KEYS = """
-- Each person's customer key on the date: the key holding most of the person's source records.
SELECT person_id, customer_key FROM (
    SELECT t.person_id, i.customer_key, COUNT(*) AS n,
        ROW_NUMBER() OVER (PARTITION BY t.person_id ORDER BY COUNT(*) DESC, i.customer_key) AS rn
    FROM identity_map i
    JOIN truth_identity t ON t.source_system = i.source_system AND t.source_id = i.source_id
    WHERE i.as_of_date = :d GROUP BY t.person_id, i.customer_key)
WHERE rn = 1
"""
ADDED_ORDERS = """
SELECT i.customer_key, o.order_id, o.order_ts, o.amount - COALESCE(o.returned_amount, 0) AS net
FROM stg_orders o
JOIN identity_map i ON i.as_of_date = :d AND i.source_system = o.source_system AND i.source_id = o.source_id
JOIN truth_policy_changes c ON c.change = 'order_added' AND c.event_id = o.order_id
WHERE o.as_of_date = :d AND o.order_ts >= :post AND o.order_ts < :cutoff
"""
OWN_RECENT = """
-- Customers with an order of their own (not one the generator added) in the retention window.
SELECT DISTINCT i.customer_key
FROM stg_orders o
JOIN identity_map i ON i.as_of_date = :d AND i.source_system = o.source_system AND i.source_id = o.source_id
LEFT JOIN truth_policy_changes c ON c.change = 'order_added' AND c.event_id = o.order_id
WHERE o.as_of_date = :d AND o.order_ts >= :recent AND o.order_ts < :cutoff AND c.event_id IS NULL
"""
REMOVED_CONTACTS = """
SELECT person_id, SUM(amount) AS cost FROM truth_policy_changes
WHERE change = 'contact_removed' AND event_ts >= :post AND event_ts < :cutoff GROUP BY person_id
"""


def planted_per_customer(wh, day: dt.date, settings) -> pd.DataFrame:
    """Per customer of the comparison: measured outcomes, the outcomes without the planted changes, archetype.

    Benchmark side only (the pipeline never reads ``truth_*``). Returns the
    outcome frame of the experiment stage's own SQL with ``<metric>_effect``
    columns (with minus without the planted changes) and the customer's archetype.
    """

    start = pd.Timestamp(wh.scalar("SELECT policy_start FROM policy_runs WHERE as_of_date = :d", {"d": day})).date()
    p = outcome_params(day, start, settings)
    frame = wh.query_df(SQL["customer_outcomes"], p).set_index("customer_key")
    q = {"d": day, "post": p["post_start_ts"], "cutoff": p["cutoff_ts"], "recent": p["retention_start_ts"]}
    added = wh.query_df(ADDED_ORDERS, q).groupby("customer_key")["net"].sum()
    own_recent = set(wh.query_df(OWN_RECENT, q)["customer_key"])
    person = wh.query_df(PERSON_KEYS, q)
    archetype = wh.query_df("SELECT person_id, archetype FROM truth_persons")
    person = person.merge(archetype, on="person_id")
    removed = wh.query_df(REMOVED_CONTACTS, q).merge(person, on="person_id").groupby("customer_key")["cost"].sum()
    # A customer's archetype: that of its person with the most records (a false merge is rare).
    frame["archetype"] = person.drop_duplicates("customer_key").set_index("customer_key")["archetype"] \
        .reindex(frame.index).fillna("(no person)")
    revenue_effect = added.reindex(frame.index).fillna(0.0)
    cost_effect = -removed.reindex(frame.index).fillna(0.0)
    frame["revenue_effect"] = revenue_effect
    frame["cost_to_serve_effect"] = cost_effect
    frame["profit_effect"] = settings.gross_margin * revenue_effect - cost_effect
    without = pd.Series(frame.index.isin(list(own_recent)).astype(float), index=frame.index)
    frame["retention_effect"] = (frame["retention"] - without).where(frame["retention"].notna())
    return frame.reset_index()


def expected_lift(frame: pd.DataFrame) -> pd.DataFrame:
    """Per segment and metric: treated-arm mean of the planted effect minus the holdout arm's (the truth)."""
    rows = []
    for sid, g in frame.groupby("segment_id"):
        arm = g["holdout"].astype(bool)
        for metric in METRICS:
            e = g[f"{metric}_effect"]
            if metric == "retention":
                e = e[g["retention"].notna()]
                a = arm[g["retention"].notna()]
            else:
                a = arm
            rows.append({"segment_id": sid, "metric": metric,
                         "expected": float(e[~a].mean() - e[a].mean()) if a.any() and (~a).any() else np.nan})
    return pd.DataFrame(rows)


def archetype_mix(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of each archetype in each pipeline segment (customers of the comparison)."""
    return pd.crosstab(frame["segment_id"], frame["archetype"], normalize="index")


def recovery_table(lift: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """The lift rows with their expected effect; ``covered`` / ``excludes_zero`` for the per-segment
    interval, ``covered_sim`` / ``excludes_zero_sim`` for the simultaneous one."""
    out = lift.merge(expected, on=["segment_id", "metric"], how="left")
    out["covered"] = (out["ci_low"] <= out["expected"]) & (out["expected"] <= out["ci_high"])
    out["excludes_zero"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    out["covered_sim"] = (out["simultaneous_low"] <= out["expected"]) & (out["expected"] <= out["simultaneous_high"])
    out["excludes_zero_sim"] = (out["simultaneous_low"] > 0) | (out["simultaneous_high"] < 0)
    out["no_effect"] = out["expected"].abs() < 1e-12
    return out


def calibration(frame: pd.DataFrame, share: float, redraws: int, seed: int) -> pd.DataFrame:
    """Which intervals exclude 0 when the arms are redrawn at random (no effect by construction).

    ``frame``: one row per customer with ``segment_id``, the metrics and their ``<metric>_pre``
    covariates (the outcome frame of the experiment stage). The CUPED adjustment does not depend on
    the arms, so it is computed once per segment and metric; each redraw then runs the stage's
    :func:`~include.experiment.lift.difference_interval` on the new arms and
    :func:`~include.experiment.lift.simultaneous_intervals` over the redraw's cells (what ``segment_lift``
    does). One row per redraw and cell: ``redraw``, ``segment_id``, ``metric``, ``excludes_zero``
    (per-segment interval), ``excludes_zero_sim`` (simultaneous), ``family_size``.
    """
    rng = np.random.default_rng(seed)
    cells = []
    for segment_id, group in frame.groupby("segment_id"):
        for metric in METRICS:
            if metric not in group or group[metric].isna().all():
                continue
            values = group[metric].to_numpy(dtype=float)
            pre = f"{metric}_pre"
            adjusted = cuped(values, group[pre].to_numpy(dtype=float)) if pre in group else values
            keep = ~np.isnan(values)
            cells.append((segment_id, metric, values[keep], adjusted[keep]))
    rows = []
    for redraw in range(redraws):
        drawn = []
        for segment_id, metric, values, adjusted in cells:
            arm = rng.random(len(values)) < share
            got = difference_interval(values[~arm], values[arm], binary=metric in BINARY,
                                      treated_adjusted=adjusted[~arm], holdout_adjusted=adjusted[arm])
            drawn.append({"redraw": redraw, "segment_id": segment_id, "metric": metric, **got})
        drawn = simultaneous_intervals(pd.DataFrame(drawn))
        rows.append(drawn[drawn["ci_low"].notna()])
    out = pd.concat(rows, ignore_index=True)
    out["excludes_zero"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    out["excludes_zero_sim"] = (out["simultaneous_low"] > 0) | (out["simultaneous_high"] < 0)
    return out[["redraw", "segment_id", "metric", "excludes_zero", "excludes_zero_sim", "family_size"]]


def familywise_error(cal: pd.DataFrame) -> pd.DataFrame:
    """Share of redraws in which ANY cell excludes 0, per interval kind: per outcome (the family the
    simultaneous interval controls) and over the whole run (every outcome)."""
    per = cal.groupby(["metric", "redraw"])[["excludes_zero", "excludes_zero_sim"]].any().groupby("metric").mean()
    per.loc["(any outcome)"] = cal.groupby("redraw")[["excludes_zero", "excludes_zero_sim"]].any().mean()
    return per.rename(columns={"excludes_zero": "per_segment", "excludes_zero_sim": "simultaneous"})


def weekly_dates(first_run: dt.date, weeks: int) -> list[dt.date]:
    return [first_run + dt.timedelta(weeks=w) for w in range(weeks + 1)]


__all__ = ["archetype_mix", "calibration", "expected_lift", "familywise_error", "generate", "load", "planted_per_customer", "recovery_table", "record_delivery",
           "run_week", "weekly_dates", "np"]
