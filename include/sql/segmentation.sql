-- Queries of the segment_customers stage and the CLV rename (include/segmentation/history.py),
-- one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date being segmented
--   :segment_id, :segment_name, :name_rule, :value_standing, :standing, :model_run_id
--                one segment's new name and naming record (rename statements)

-- name: all_centroids
-- Every fitted date's centroids: the fold over them gives stable segment ids (history.fold_segment_ids).
SELECT as_of_date, segment_id, feature, z_value FROM segment_centroids ORDER BY as_of_date, segment_id, feature;

-- name: all_profile_values
-- Mean 365-day revenue per segment: orders each date's segments model-locally (1 = most valuable).
SELECT as_of_date, segment_id, monetary FROM segment_profiles ORDER BY as_of_date, segment_id;

-- name: all_gates
-- Only dates whose gate passed are matched against by later dates.
SELECT as_of_date, gate_passed FROM segmentation_runs ORDER BY as_of_date;

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
