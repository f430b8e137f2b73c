-- Queries of the backtest_claims stage (include/backtest), one per "-- name:" block.
-- Parameters:
--   :snapshot_date  the run's as-of date: its staged snapshot is what the backtest reads
--   :start_ts       start of the horizon (the day after the backtest date), inclusive
--   :end_ts         end of the horizon (the day after the run's as-of date), exclusive

-- name: first_order
-- Where the run's data begin: a backtest date before it has nothing to check.
SELECT MIN(order_ts) FROM stg_orders WHERE as_of_date = :snapshot_date;

-- name: outcomes
-- What every customer did in the horizon: net revenue (paid minus returned) and days with an order.
SELECT i.customer_key,
    CAST(SUM(o.amount - COALESCE(o.returned_amount, 0)) AS DOUBLE) AS next_revenue,
    CAST(COUNT(DISTINCT CAST(o.order_ts AS DATE)) AS BIGINT) AS next_purchase_days
FROM stg_orders o
JOIN identity_map i ON i.as_of_date = o.as_of_date
    AND i.source_system = o.source_system AND i.source_id = o.source_id
WHERE o.as_of_date = :snapshot_date AND o.order_ts >= :start_ts AND o.order_ts < :end_ts
GROUP BY i.customer_key;
