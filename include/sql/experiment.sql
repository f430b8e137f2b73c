-- Experiment reads: per-customer outcomes of one as-of date for the treated-vs-holdout lift.
-- Binds: :as_of_date (DATE), :experiment_name, :policy_start (first as-of date of the policy in force),
-- :cutoff_ts (start of the day after the as-of date, exclusive), :post_start_ts (start of the day after
-- the policy start: the first day the playbook could act), :pre_start_ts (post_start_ts minus the
-- length of the post-policy window: the CUPED covariate window of the money outcomes), :base_start_ts
-- (post_start_ts - w, w = retention_window_days: the retention base window, before any treatment),
-- :retention_start_ts (the later of post_start_ts and cutoff_ts - w), :margin (gross margin),
-- :per_customer (servicing cost per customer over the post-policy window; the covariate window is as
-- long), :per_order (servicing cost per order).
-- Intention to treat: every customer assigned under the policy (a customer_holdout row from the policy
-- start to the as-of date) counts, in the segment and arm of its FIRST date under the policy (the
-- current segment could itself be moved by the treatment), also when it is no longer published.
-- One row per customer: money outcomes are cumulative over the whole post-policy window, so weekly
-- runs re-estimate one growing comparison and no customer is counted twice in one estimate.
-- Retention: of the customers who ordered in the w days before the policy (the base, fixed before any
-- treatment), whether they ordered in the post-policy window (its last w days once it is longer).

-- name: customer_outcomes
WITH ids AS (
    SELECT source_system, source_id, customer_key FROM identity_map WHERE as_of_date = :as_of_date
), assigned AS (
    -- MIN_BY (DuckDB and Snowflake): the row of each customer's first date, in one pass without a sort.
    SELECT customer_key, MIN(as_of_date) AS first_date, MIN_BY(segment_id, as_of_date) AS segment_id,
        MIN_BY(segment_name, as_of_date) AS segment_name, MIN_BY(holdout, as_of_date) AS holdout
    FROM customer_holdout
    WHERE experiment_name = :experiment_name AND as_of_date >= :policy_start AND as_of_date <= :as_of_date
    GROUP BY customer_key
), arms AS (
    -- The segment as published for that date now: a later run's id fold may have relabelled the date.
    SELECT a.customer_key, COALESCE(s.segment_id, a.segment_id) AS segment_id,
        COALESCE(s.segment_name, a.segment_name) AS segment_name, a.holdout
    FROM assigned a
    LEFT JOIN customer_segments s ON s.as_of_date = a.first_date AND s.customer_key = a.customer_key
), cost_data AS (
    SELECT (SELECT COUNT(*) FROM stg_support_contacts WHERE as_of_date = :as_of_date) > 0
        OR :per_customer > 0 OR :per_order > 0 AS known
), money AS (
    SELECT i.customer_key,
        SUM(CASE WHEN o.order_ts >= :post_start_ts THEN 1 ELSE 0 END) AS orders,
        SUM(CASE WHEN o.order_ts >= :post_start_ts THEN o.amount - COALESCE(o.returned_amount, 0) END) AS revenue,
        SUM(CASE WHEN o.order_ts >= :pre_start_ts AND o.order_ts < :post_start_ts THEN 1 ELSE 0 END) AS orders_pre,
        SUM(CASE WHEN o.order_ts >= :pre_start_ts AND o.order_ts < :post_start_ts
            THEN o.amount - COALESCE(o.returned_amount, 0) END) AS revenue_pre,
        SUM(CASE WHEN o.order_ts >= :base_start_ts AND o.order_ts < :post_start_ts THEN 1 ELSE 0 END) AS orders_base,
        MAX(CASE WHEN o.order_ts >= :retention_start_ts THEN 1 ELSE 0 END) AS ordered_recently
    FROM stg_orders o
    JOIN ids i ON i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND o.order_ts < :cutoff_ts
      AND o.order_ts >= LEAST(CAST(:pre_start_ts AS TIMESTAMP), CAST(:base_start_ts AS TIMESTAMP))
    GROUP BY i.customer_key
), support AS (
    SELECT i.customer_key,
        SUM(CASE WHEN s.contact_ts >= :post_start_ts THEN COALESCE(s.cost, c.cost_per_contact, 0) END) AS cost,
        SUM(CASE WHEN s.contact_ts < :post_start_ts THEN COALESCE(s.cost, c.cost_per_contact, 0) END) AS cost_pre
    FROM stg_support_contacts s
    JOIN ids i ON i.source_system = s.source_system AND i.source_id = s.source_id
    LEFT JOIN support_channel_costs c ON c.as_of_date = :as_of_date AND c.channel = s.channel
    WHERE s.as_of_date = :as_of_date AND s.contact_ts < :cutoff_ts AND s.contact_ts >= :pre_start_ts
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
    CAST(CASE WHEN m.orders_base > 0 THEN m.ordered_recently END AS DOUBLE) AS retention,
    CAST(CASE WHEN m.orders_base > 0 THEN m.orders_base END AS DOUBLE) AS retention_pre
FROM arms a
CROSS JOIN cost_data k
LEFT JOIN money m ON m.customer_key = a.customer_key
LEFT JOIN support s ON s.customer_key = a.customer_key
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

-- name: later_published_dates
-- Dates published after :as_of_date (publishing a date republished them): the experiment recomputes them too.
SELECT DISTINCT as_of_date FROM customer_segments WHERE as_of_date > :as_of_date ORDER BY as_of_date;

-- name: delivered_label_dates
-- Label dates whose labels reached a CRM target: a batch with at least one customer acknowledged (the outbox
-- acknowledges what it writes; dry runs log nothing). Rows from before label_date was logged carried the
-- run's own labels.
SELECT DISTINCT COALESCE(label_date, as_of_date) AS label_date FROM crm_push_log WHERE acknowledged > 0;

-- name: holdout_of_date
SELECT * FROM customer_holdout WHERE as_of_date = :as_of_date;

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
