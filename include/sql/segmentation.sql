-- Queries of the segmentation stages (include/segmentation/history.py), one per "-- name:" block.
-- Parameters:
--   :as_of_date  the date being segmented

-- name: planted_archetypes
-- Demo ground truth (evaluation only): the planted archetype of each customer's records.
SELECT m.customer_key, MIN(p.archetype) AS archetype
FROM identity_map m
JOIN truth_identity t ON t.source_system = m.source_system AND t.source_id = m.source_id
JOIN truth_persons p ON p.person_id = t.person_id
WHERE m.as_of_date = :as_of_date
GROUP BY m.customer_key;
