-- Queries of the fit_clv stage, one per "-- name:" block (crosscheck_clv reads labels.sql).
-- Parameters:
--   :as_of_date  the date scored
--   :end_ts      end (exclusive) of the 365 days after the date (ground-truth evaluation)

-- name: summary_full
SELECT * FROM clv_summary WHERE as_of_date = :as_of_date AND period = 'full' ORDER BY customer_key;

-- name: summary_calibration
SELECT * FROM clv_summary WHERE as_of_date = :as_of_date AND period = 'calibration' ORDER BY customer_key;

-- name: truth_first_future_order
SELECT MIN(order_ts) FROM truth_future_orders;

-- name: truth_future_purchases
-- Demo ground truth (evaluation only): purchase days in the year after the date; a person
-- split over several keys is counted once, on the smallest key.
SELECT pk.customer_key, COUNT(DISTINCT CAST(f.order_ts AS DATE)) AS true_purchases_365d
FROM truth_future_orders f
JOIN (SELECT t.person_id, MIN(m.customer_key) AS customer_key
      FROM truth_identity t
      JOIN identity_map m ON m.source_system = t.source_system AND m.source_id = t.source_id
       AND m.as_of_date = :as_of_date
      GROUP BY t.person_id) pk ON pk.person_id = f.person_id
WHERE f.order_ts < :end_ts
GROUP BY pk.customer_key;
