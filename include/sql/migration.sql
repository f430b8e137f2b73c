-- Queries of the track_migration and check_migration stages, one per "-- name:" block.
-- Parameters:
--   :as_of_date  the run's as-of date (a snapshot's date for snapshot/clv_365d)
--   :window_start  exclusive lower bound of the Markov window (an earlier snapshot's date)

-- name: snapshot
-- One published snapshot.
SELECT customer_key, segment_id, segment_name FROM customer_segments WHERE as_of_date = :as_of_date;

-- name: clv_365d
SELECT customer_key, clv_365d FROM customer_clv WHERE as_of_date = :as_of_date;

-- name: transitions_window
-- Transitions pooled into the Markov matrix.
SELECT * FROM segment_transitions WHERE to_date <= :as_of_date AND to_date > :window_start ORDER BY to_date;

-- name: transitions_into
SELECT * FROM segment_transitions WHERE to_date = :as_of_date;

-- name: top_segments_before
-- Segments of the snapshot before :as_of_date, richest first (labels of the last published run):
-- customers can only leave a segment that had them.
SELECT p.segment_id, MIN(p.segment_name) AS segment_name
FROM segment_labels p
JOIN (SELECT DISTINCT segment_id FROM customer_segments
      WHERE as_of_date = (SELECT MAX(from_date) FROM segment_transitions WHERE to_date = :as_of_date)) c
  ON c.segment_id = p.segment_id
WHERE p.as_of_date = (SELECT MAX(as_of_date) FROM segmentation_runs WHERE as_of_date <= :as_of_date AND published)
GROUP BY p.segment_id
ORDER BY MAX(p.revenue_per_customer) DESC;
