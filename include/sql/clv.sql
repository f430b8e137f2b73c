-- Queries of the fit_clv and crosscheck_clv stages, one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date scored
--   :end_ts      end (exclusive) of the 365 days after the date (ground-truth evaluation)
--   :reason      text appended to the date's gate reason

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

-- name: segment_value_claims
SELECT segment_id, segment_name, customers, monetary, value_standing
FROM segment_profiles WHERE as_of_date = :as_of_date;

-- name: segment_clv
-- Mean and total CLV of each model segment (before publishing, so by segment_assignments).
SELECT a.segment_id, AVG(c.clv_365d) AS mean_clv_365d, SUM(c.clv_365d) AS total_clv_365d,
       AVG(c.clv_365d_low) AS mean_clv_365d_low, AVG(c.clv_365d_high) AS mean_clv_365d_high,
       AVG(c.p_alive) AS mean_p_alive
FROM segment_assignments a
JOIN customer_clv c ON c.as_of_date = a.as_of_date AND c.customer_key = a.customer_key
WHERE a.as_of_date = :as_of_date
GROUP BY a.segment_id;

-- name: run_published
SELECT published FROM segmentation_runs WHERE as_of_date = :as_of_date;

-- name: fail_gate
UPDATE segmentation_runs SET gate_passed = FALSE, gate_reason = COALESCE(gate_reason || '; ', '') || :reason
WHERE as_of_date = :as_of_date;

-- name: clv_run
-- The date's CLV run (written every run by fit_clv): status 'unavailable' means no customer_clv rows.
SELECT status, clv_model, reason, check_passed FROM clv_runs WHERE as_of_date = :as_of_date;

-- name: clear_check
DELETE FROM segment_clv_check WHERE as_of_date = :as_of_date;
