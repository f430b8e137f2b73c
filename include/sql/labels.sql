-- Queries of the label_segments stage (include/labels), one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date being labelled

-- name: fit_run
-- The fit's run: its model run and the stability gate segment_customers judged.
SELECT model_run_id, k, gate_passed, gate_reason FROM segmentation_runs WHERE as_of_date = :as_of_date;

-- name: fit_assignments
SELECT customer_key, fit_segment FROM segment_assignments WHERE as_of_date = :as_of_date;

-- name: clv_scores
-- The CLV witness: each customer's 365-day CLV and P(alive) on the date, and the model that scored them.
SELECT customer_key, clv_365d, p_alive, clv_model FROM customer_clv WHERE as_of_date = :as_of_date;

-- name: clv_run
-- The date's CLV run: 'unavailable' (no scores, and why) or 'fitted' (scores that failed their check: no witness).
SELECT status, reason FROM clv_runs WHERE as_of_date = :as_of_date;

-- name: backtest
-- This run's backtest: the claims it checked as of an earlier date and what those customers did next.
SELECT * FROM claims_backtest WHERE as_of_date = :as_of_date;

-- name: other_labels
-- Every other labelled date's rows (the fold re-derives their stable ids).
SELECT * FROM segment_labels WHERE as_of_date <> :as_of_date ORDER BY as_of_date, fit_segment;

-- name: label_gates
-- Only dates whose gate passed are matched against by later dates.
SELECT as_of_date, gate_passed FROM label_runs ORDER BY as_of_date;

-- name: fit_centroids
SELECT as_of_date, fit_segment, feature, z_value FROM segment_centroids ORDER BY as_of_date, fit_segment, feature;

-- name: fit_sizes
SELECT as_of_date, fit_segment, customers FROM segment_profiles ORDER BY as_of_date, fit_segment;

-- name: labels_of
-- A date's labels (publish_segments, the CLV cross-check, economics).
SELECT * FROM segment_labels WHERE as_of_date = :as_of_date ORDER BY fit_segment;

-- name: label_run
SELECT * FROM label_runs WHERE as_of_date = :as_of_date;

-- name: label_claims
-- One row per label of the date (the CLV cross-check's claims): size, revenue per customer, standings.
SELECT segment_id, MIN(segment_name) AS segment_name, MIN(customers) AS customers,
    MIN(revenue_per_customer) AS revenue_per_customer, MIN(value_standing) AS value_standing,
    MIN(standing) AS standing
FROM segment_labels WHERE as_of_date = :as_of_date GROUP BY segment_id ORDER BY segment_id;

-- name: label_clv
-- Mean CLV and P(alive) of each label's customers (the fit's assignments under the labels' ids).
SELECT l.segment_id, AVG(c.clv_365d) AS mean_clv_365d, SUM(c.clv_365d) AS total_clv_365d,
       AVG(c.clv_365d_low) AS mean_clv_365d_low, AVG(c.clv_365d_high) AS mean_clv_365d_high,
       AVG(c.p_alive) AS mean_p_alive,
       -- BG/NBD gives every customer without a repeat purchase P(alive) = 1 by construction: no witness.
       AVG(CASE WHEN c.clv_model = 'BG/NBD' AND f.repeat_buyer = 0 THEN NULL
                WHEN c.p_alive >= 0.5 THEN 1.0 ELSE 0.0 END) AS alive_share
FROM segment_assignments a
JOIN segment_labels l ON l.as_of_date = a.as_of_date AND l.fit_segment = a.fit_segment
JOIN customer_clv c ON c.as_of_date = a.as_of_date AND c.customer_key = a.customer_key
LEFT JOIN customer_features f ON f.as_of_date = a.as_of_date AND f.customer_key = a.customer_key
WHERE a.as_of_date = :as_of_date
GROUP BY l.segment_id;
