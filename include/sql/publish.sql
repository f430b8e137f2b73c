-- Queries of the publish_segments stage (include/migration/publish.py), one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date being (re)published
--   :published   whether this date's own labels were published (its quality gate passed)

-- name: gate_status
-- The quality gate of one segmentation run.
SELECT gate_passed, gate_reason, model_run_id FROM segmentation_runs WHERE as_of_date = :as_of_date;

-- name: raw_labels
-- The model's labels of the date, before hysteresis.
SELECT customer_key, segment_id AS raw_segment_id FROM segment_assignments WHERE as_of_date = :as_of_date;

-- name: rfm
SELECT customer_key, rfm_r, rfm_f, rfm_m, rfm_segment FROM customer_rfm WHERE as_of_date = :as_of_date;

-- name: segment_names
SELECT segment_id, segment_name FROM segment_profiles WHERE as_of_date = :as_of_date;

-- name: published_labels
-- A published snapshot with the fold's state (pending segment and its run count).
SELECT customer_key, segment_id, segment_name, model_run_id, raw_segment_id, pending_segment_id, pending_runs
FROM customer_segments WHERE as_of_date = :as_of_date;

-- name: mark_published
UPDATE segmentation_runs SET published = :published WHERE as_of_date = :as_of_date;
