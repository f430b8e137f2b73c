-- Experiment reads: per-customer outcomes of one as-of date for the treated-vs-holdout lift.
-- Binds: :as_of_date (DATE), :experiment_name, :policy_start (first date of the policy in force),
-- :cutoff_ts (start of the day after the as-of date, exclusive), :money_start_ts (start of the
-- outcome window for money: the day after the policy start, at most retention_window_days back),
-- :window_start_ts / :previous_window_start_ts (cutoff - w / cutoff - 2w, w = retention_window_days),
-- :margin (gross margin), :per_customer (servicing cost per customer over the money window),
-- :per_order (servicing cost per order), :pre_start_ts / :pre_end_ts (the window of the same length
-- before the policy started: each customer's money outcomes there are the covariate of the
-- CUPED adjustment in include/experiment/lift.py).
-- Each customer is compared in the segment and arm it had on its first date under the policy
-- (segment_at_start): the current segment could itself be moved by the treatment.

-- name: customer_outcomes
WITH ids AS (
    SELECT source_system, source_id, customer_key FROM identity_map WHERE as_of_date = :as_of_date
), first_rows AS (
    SELECT customer_key, segment_id, segment_name, holdout,
        ROW_NUMBER() OVER (PARTITION BY customer_key ORDER BY as_of_date) AS rn
    FROM customer_holdout
    WHERE experiment_name = :experiment_name AND as_of_date >= :policy_start AND as_of_date <= :as_of_date
), arms AS (
    -- Customers published today, in their segment and arm on their first date under the policy.
    SELECT f.customer_key, f.segment_id, f.segment_name, f.holdout
    FROM first_rows f
    JOIN customer_holdout t ON t.as_of_date = :as_of_date AND t.experiment_name = :experiment_name
        AND t.customer_key = f.customer_key
    WHERE f.rn = 1
), cost_data AS (
    SELECT (SELECT COUNT(*) FROM stg_support_contacts WHERE as_of_date = :as_of_date) > 0
        OR :per_customer > 0 OR :per_order > 0 AS known
), money AS (
    SELECT i.customer_key,
        SUM(CASE WHEN o.order_ts >= :money_start_ts THEN 1 ELSE 0 END) AS orders,
        SUM(CASE WHEN o.order_ts >= :money_start_ts THEN o.amount - COALESCE(o.returned_amount, 0) END) AS revenue,
        SUM(CASE WHEN o.order_ts < :pre_end_ts THEN 1 ELSE 0 END) AS orders_pre,
        SUM(CASE WHEN o.order_ts < :pre_end_ts THEN o.amount - COALESCE(o.returned_amount, 0) END) AS revenue_pre
    FROM stg_orders o
    JOIN ids i ON i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND o.order_ts < :cutoff_ts
      AND ((o.order_ts >= :money_start_ts) OR (o.order_ts >= :pre_start_ts AND o.order_ts < :pre_end_ts))
    GROUP BY i.customer_key
), support AS (
    SELECT i.customer_key,
        SUM(CASE WHEN s.contact_ts >= :money_start_ts THEN COALESCE(s.cost, c.cost_per_contact, 0) END) AS cost,
        SUM(CASE WHEN s.contact_ts < :pre_end_ts THEN COALESCE(s.cost, c.cost_per_contact, 0) END) AS cost_pre
    FROM stg_support_contacts s
    JOIN ids i ON i.source_system = s.source_system AND i.source_id = s.source_id
    LEFT JOIN support_channel_costs c ON c.as_of_date = :as_of_date AND c.channel = s.channel
    WHERE s.as_of_date = :as_of_date AND s.contact_ts < :cutoff_ts
      AND ((s.contact_ts >= :money_start_ts) OR (s.contact_ts >= :pre_start_ts AND s.contact_ts < :pre_end_ts))
    GROUP BY i.customer_key
), activity AS (
    -- Repeat retention as in economics.sql: ordered in (d-2w, d-w], and again in (d-w, d]?
    SELECT i.customer_key,
        MAX(CASE WHEN o.order_ts < :window_start_ts THEN 1 ELSE 0 END) AS active_before,
        MAX(CASE WHEN o.order_ts >= :window_start_ts THEN 1 ELSE 0 END) AS active_now
    FROM stg_orders o
    JOIN ids i ON i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND o.order_ts >= :previous_window_start_ts AND o.order_ts < :cutoff_ts
    GROUP BY i.customer_key
)
SELECT a.customer_key, a.segment_id, a.segment_name, a.holdout,
    CAST(COALESCE(m.orders, 0) AS BIGINT) AS orders,
    CAST(COALESCE(m.revenue, 0) AS DOUBLE) AS revenue,
    CAST(CASE WHEN k.known THEN COALESCE(s.cost, 0) + :per_customer + COALESCE(m.orders, 0) * :per_order
         END AS DOUBLE) AS cost_to_serve,
    CAST(CASE WHEN k.known THEN COALESCE(m.revenue, 0) * :margin
         - (COALESCE(s.cost, 0) + :per_customer + COALESCE(m.orders, 0) * :per_order) END AS DOUBLE) AS profit,
    CAST(COALESCE(m.revenue_pre, 0) AS DOUBLE) AS revenue_pre,
    CAST(CASE WHEN k.known THEN COALESCE(s.cost_pre, 0) + :per_customer + COALESCE(m.orders_pre, 0) * :per_order
         END AS DOUBLE) AS cost_to_serve_pre,
    CAST(CASE WHEN k.known THEN COALESCE(m.revenue_pre, 0) * :margin
         - (COALESCE(s.cost_pre, 0) + :per_customer + COALESCE(m.orders_pre, 0) * :per_order) END AS DOUBLE)
        AS profit_pre,
    CAST(COALESCE(v.active_before, 0) AS BIGINT) AS retention_base,
    CAST(CASE WHEN v.active_before = 1 THEN v.active_now END AS DOUBLE) AS retained
FROM arms a
CROSS JOIN cost_data k
LEFT JOIN money m ON m.customer_key = a.customer_key
LEFT JOIN support s ON s.customer_key = a.customer_key
LEFT JOIN activity v ON v.customer_key = a.customer_key
ORDER BY a.customer_key;

-- name: published_actions
-- Published labels of the date with the playbook action the economics stage chose for each customer.
SELECT s.customer_key, s.segment_id, s.segment_name, p.action
FROM customer_segments s
LEFT JOIN customer_priority p ON p.as_of_date = s.as_of_date AND p.customer_key = s.customer_key
WHERE s.as_of_date = :as_of_date
ORDER BY s.customer_key;

-- name: policy_history
SELECT as_of_date, policy_hash, holdout_share FROM policy_runs
WHERE experiment_name = :experiment_name AND as_of_date < :as_of_date
ORDER BY as_of_date DESC;

-- name: policy_of_date
SELECT * FROM policy_runs WHERE as_of_date = :as_of_date;

-- name: lift_of_date
SELECT * FROM segment_lift WHERE as_of_date = :as_of_date ORDER BY segment_id, metric;

-- name: lift_under_policy
-- The lift of every date from the policy's start to :as_of_date under the same playbook.
SELECT * FROM segment_lift
WHERE experiment_name = :experiment_name AND policy_hash = :policy_hash
  AND as_of_date >= :policy_start AND as_of_date <= :as_of_date
ORDER BY as_of_date, segment_id, metric;

-- name: last_date_of_previous_policy
SELECT MAX(as_of_date) FROM policy_runs
WHERE experiment_name = :experiment_name AND as_of_date < :policy_start AND policy_hash <> :policy_hash;

-- name: economics_before_after
-- Segment economics on the last date of the previous policy and now (a before/after view, not randomised).
SELECT as_of_date, segment_name, customers, profit_per_customer, repeat_retention,
    cost_to_serve / customers AS cost_per_customer
FROM segment_economics WHERE as_of_date IN (:before_date, :as_of_date)
ORDER BY segment_name, as_of_date;
