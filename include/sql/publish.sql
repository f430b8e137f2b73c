-- Queries of the publish_segments stage (include/migration/publish.py), one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date being (re)published
--   :published   whether this date's own labels were published (its quality gate passed)

-- name: gate_status
-- The quality gate of one date's labels (stability and validity; label_segments decides it).
SELECT gate_passed, gate_reason, model_run_id FROM label_runs WHERE as_of_date = :as_of_date;

-- name: raw_labels
-- The model's labels of the date, before hysteresis, under the labels' stable ids.
SELECT a.customer_key, l.segment_id AS raw_segment_id
FROM segment_assignments a
JOIN segment_labels l ON l.as_of_date = a.as_of_date AND l.fit_segment = a.fit_segment
WHERE a.as_of_date = :as_of_date;

-- name: rfm
SELECT customer_key, rfm_r, rfm_f, rfm_m, rfm_segment FROM customer_rfm WHERE as_of_date = :as_of_date;

-- name: segment_names
SELECT DISTINCT segment_id, segment_name FROM segment_labels WHERE as_of_date = :as_of_date;

-- name: published_labels
-- A published snapshot with the fold's state (pending segment and its run count).
SELECT customer_key, segment_id, segment_name, model_run_id, raw_segment_id, pending_segment_id, pending_runs
FROM customer_segments WHERE as_of_date = :as_of_date;

-- name: mark_published
UPDATE segmentation_runs SET published = :published WHERE as_of_date = :as_of_date;
