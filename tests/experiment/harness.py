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
from include.experiment.build import ExperimentSettings, outcome_params, run_experiment
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
                     "truth_policy", "truth_policy_changes"):
            wh.replace_table(name, tables[name])
        wh.replace_table("person_keys", person_keys)


def run_week(url: str, day: dt.date, settings: ExperimentSettings, playbook_path=None) -> pd.DataFrame:
    """Stage, resolve, publish and run the experiment stage for ``day``; return its lift rows."""
    params = {"d": day, "cutoff": dt.datetime.combine(day + dt.timedelta(days=1), dt.time())}
    with Warehouse(url) as wh:
        with wh.begin() as conn:
            for table in ("stg_orders", "stg_support_contacts", "identity_map", "customer_segments",
                          "customer_priority"):
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE as_of_date = '{day.isoformat()}'")
            for sql in (STAGE_ORDERS, STAGE_SUPPORT, IDENTITY, PUBLISH, PRIORITY):
                wh.run_script(sql, params, conn=conn)
        return run_experiment(wh, day, settings, playbook_path)["lift"]


def planted_truth(url: str, day: dt.date, start: dt.date, settings: ExperimentSettings) -> pd.DataFrame:
    """What the generator planted, per segment and metric, as a per-customer difference for ``day``.

    Revenue: the added orders' revenue in the money window per treated customer; cost-to-serve: minus the
    removed contacts' cost per treated customer; profit: margin x revenue - cost; retention: the treated
    customers' repeat retention with the added orders minus without them (kept customers who had stopped
    buying also re-enter the retention base, so this can exceed the generator's
    ``retention_effect_planted``). Segments without an effect get 0.
    """
    p = outcome_params(day, start, settings)
    with Warehouse(url) as wh:
        changes = wh.query_df(
            "SELECT k.segment_id, k.archetype, c.change, SUM(c.amount) AS amount FROM truth_policy_changes c "
            "JOIN person_keys k ON k.person_id = c.person_id "
            "WHERE c.event_ts >= :lo AND c.event_ts < :hi GROUP BY ALL", {"lo": p["money_start_ts"], "hi": p["cutoff_ts"]})
        treated = wh.query_df(
            "SELECT k.segment_id, k.archetype, COUNT(*) AS n, MAX(t.retention_effect_planted) AS retention "
            "FROM truth_policy t JOIN person_keys k ON k.person_id = t.person_id "
            "JOIN customer_holdout h ON h.as_of_date = :d AND h.customer_key = k.customer_key AND NOT h.holdout "
            "GROUP BY ALL", {"d": day})
        archetype = wh.scalar("SELECT MAX(archetype) FROM truth_policy WHERE retention_treated")
        retention = wh.query_df(
            """
            WITH treated AS (
                SELECT h.customer_key, h.segment_id FROM customer_holdout h
                WHERE h.as_of_date = :d AND NOT h.holdout
            ), flags AS (
                SELECT t.segment_id, t.customer_key, (c.event_id IS NOT NULL) AS added,
                    MAX(CASE WHEN o.order_ts < :ws THEN 1 ELSE 0 END) AS before_all,
                    MAX(CASE WHEN o.order_ts >= :ws THEN 1 ELSE 0 END) AS now_all
                FROM stg_orders o
                JOIN identity_map i ON i.as_of_date = :d AND i.source_system = o.source_system
                    AND i.source_id = o.source_id
                JOIN treated t ON t.customer_key = i.customer_key
                LEFT JOIN truth_policy_changes c ON c.event_id = o.order_id
                WHERE o.as_of_date = :d AND o.order_ts >= :pws AND o.order_ts < :hi
                GROUP BY ALL
            ), per_customer AS (
                SELECT segment_id, customer_key,
                    MAX(before_all) AS b1, MAX(now_all) AS n1,
                    MAX(CASE WHEN NOT added THEN before_all ELSE 0 END) AS b0,
                    MAX(CASE WHEN NOT added THEN now_all ELSE 0 END) AS n0
                FROM flags GROUP BY ALL
            )
            SELECT segment_id, SUM(b1 * n1) / NULLIF(SUM(b1), 0) - SUM(b0 * n0) / NULLIF(SUM(b0), 0) AS effect
            FROM per_customer GROUP BY segment_id
            """, {"d": day, "ws": p["window_start_ts"], "pws": p["previous_window_start_ts"], "hi": p["cutoff_ts"]})
        retention_by_segment = dict(zip(retention["segment_id"], retention["effect"].fillna(0.0), strict=True))
    rows = []
    for r in treated.itertuples():
        got = changes[changes["segment_id"] == r.segment_id].set_index("change")["amount"]
        revenue = float(got.get("order_added", 0.0)) / r.n
        cost = -float(got.get("contact_removed", 0.0)) / r.n
        retention = float(retention_by_segment.get(r.segment_id, 0.0)) if r.archetype == archetype else 0.0
        for metric, value in (("retention", retention), ("revenue", revenue), ("cost_to_serve", cost),
                              ("profit", settings.gross_margin * revenue - cost)):
            rows.append({"segment_id": r.segment_id, "segment_name": r.archetype, "metric": metric, "planted": value})
    return pd.DataFrame(rows)


def recovery(lift: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Measured lift beside the planted effect, with whether the 95% interval covers it."""
    out = lift.merge(truth, on=["segment_id", "segment_name", "metric"], how="left")
    out["covered"] = (out["ci_low"] <= out["planted"]) & (out["planted"] <= out["ci_high"])
    out["excludes_zero"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    return out


def weekly_dates(first_run: dt.date, weeks: int) -> list[dt.date]:
    return [first_run + dt.timedelta(weeks=w) for w in range(weeks + 1)]


__all__ = ["generate", "load", "planted_truth", "recovery", "run_week", "weekly_dates", "np"]
