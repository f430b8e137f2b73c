-- Queries of the segment_customers stage and the CLV rename (include/segmentation/history.py),
-- one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date being segmented
--   :segment_id, :segment_name, :name_rule, :value_standing, :standing, :model_run_id
--                one segment's new name and naming record (rename statements)

-- name: previous_published_date
-- The latest earlier date whose labels were published: its centroids keep segment ids stable.
SELECT MAX(as_of_date) FROM segmentation_runs WHERE as_of_date < :as_of_date AND published;

-- name: largest_other_segment_id
-- New segments get ids above every id used on another date.
SELECT MAX(segment_id) FROM segment_centroids WHERE as_of_date <> :as_of_date;

-- name: centroids
SELECT segment_id, feature, z_value FROM segment_centroids WHERE as_of_date = :as_of_date;

-- name: planted_archetypes
-- Demo ground truth (evaluation only): the planted archetype of each customer's records.
SELECT m.customer_key, MIN(p.archetype) AS archetype
FROM identity_map m
JOIN truth_identity t ON t.source_system = m.source_system AND t.source_id = m.source_id
JOIN truth_persons p ON p.person_id = t.person_id
WHERE m.as_of_date = :as_of_date
GROUP BY m.customer_key;

-- name: assignments
SELECT customer_key, segment_id FROM segment_assignments WHERE as_of_date = :as_of_date;

-- name: profile_names
SELECT segment_id, segment_name, model_run_id FROM segment_profiles WHERE as_of_date = :as_of_date;

-- name: rename_profile
UPDATE segment_profiles SET segment_name = :segment_name, name_rule = :name_rule,
    value_standing = :value_standing, standing = :standing
WHERE as_of_date = :as_of_date AND segment_id = :segment_id;

-- name: rename_assignments
UPDATE segment_assignments SET segment_name = :segment_name
WHERE as_of_date = :as_of_date AND segment_id = :segment_id;

-- name: rename_published
-- Only where this date's own model run is already published.
UPDATE customer_segments SET segment_name = :segment_name
WHERE as_of_date = :as_of_date AND segment_id = :segment_id AND model_run_id = :model_run_id;
