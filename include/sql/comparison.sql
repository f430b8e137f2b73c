-- Legacy labels beside the behavioural segments: the reads of the compare_schemes stage
-- and of the report's "Legacy labels" section, one per "-- name:" block.
-- Parameters:
--   :as_of_date  the run's date

-- name: resolved_labels
-- One label per customer and scheme, from the staged labels of the customer's records
-- (stg_legacy_labels joined to identity_map of the same date). The rule, in order:
--   1. each record's current label is its row with the latest valid_from (undated rows
--      count as the oldest; rows dated after the as-of date were never staged);
--   2. among the customer's records, the label with the latest valid_from wins
--      (the business's most recent decision);
--   3. on equal dates (or none), the label most of the customer's records carry;
--   4. then the first label alphabetically, so a re-run picks the same one.
-- `conflict`: the customer's records disagree (more than one current label);
-- `rule`: which step decided (single, most_recent, most_records, first_alphabetically).
WITH staged AS (
    SELECT i.customer_key, l.source_system, l.source_id, l.scheme, l.label, l.valid_from
    FROM stg_legacy_labels l
    JOIN identity_map i ON i.as_of_date = :as_of_date
        AND i.source_system = l.source_system AND i.source_id = l.source_id
    WHERE l.as_of_date = :as_of_date
), record_ranked AS (
    SELECT s.*, RANK() OVER (PARTITION BY source_system, source_id, scheme
                             ORDER BY valid_from DESC NULLS LAST) AS recency
    FROM staged s
), record_current AS (
    SELECT customer_key, source_system, source_id, scheme, label, valid_from
    FROM record_ranked WHERE recency = 1
), record_counts AS (
    SELECT customer_key, scheme, COUNT(DISTINCT source_system || '|' || source_id) AS records
    FROM record_current GROUP BY customer_key, scheme
), candidates AS (
    SELECT customer_key, scheme, label, MAX(valid_from) AS valid_from,
        COUNT(DISTINCT source_system || '|' || source_id) AS carriers
    FROM record_current GROUP BY customer_key, scheme, label
), ranked AS (
    SELECT c.*,
        -- One ordering for the pick and for the runner-up it is compared with (the rule's order).
        ROW_NUMBER() OVER (PARTITION BY customer_key, scheme ORDER BY valid_from DESC NULLS LAST, carriers DESC, label) AS pick,
        COUNT(*) OVER (PARTITION BY customer_key, scheme) AS distinct_labels,
        LEAD(valid_from) OVER (PARTITION BY customer_key, scheme ORDER BY valid_from DESC NULLS LAST, carriers DESC, label) AS next_valid_from,
        LEAD(carriers) OVER (PARTITION BY customer_key, scheme ORDER BY valid_from DESC NULLS LAST, carriers DESC, label) AS next_carriers
    FROM candidates c
)
SELECT r.customer_key, r.scheme, r.label, r.valid_from, n.records, r.distinct_labels,
    r.distinct_labels > 1 AS conflict,
    CASE WHEN r.distinct_labels = 1 THEN 'single'
         WHEN r.valid_from IS NOT NULL AND (r.next_valid_from IS NULL OR r.valid_from > r.next_valid_from)
             THEN 'most_recent'
         WHEN r.carriers > r.next_carriers THEN 'most_records'
         ELSE 'first_alphabetically' END AS rule
FROM ranked r
JOIN record_counts n ON n.customer_key = r.customer_key AND n.scheme = r.scheme
WHERE r.pick = 1
ORDER BY r.scheme, r.customer_key;

-- name: records_staged
-- Staged label rows per scheme (before resolving to customers).
SELECT scheme, COUNT(*) AS records_staged FROM stg_legacy_labels WHERE as_of_date = :as_of_date
GROUP BY scheme ORDER BY scheme;

-- name: legacy_quarantined
-- Label rows quarantined this date, per reason (unknown_customer_id: no identity record has that id).
SELECT reason, COUNT(*) AS rows FROM quarantine
WHERE as_of_date = :as_of_date AND source_table = 'raw_legacy_labels'
GROUP BY reason ORDER BY reason;

-- name: customer_values
-- Every published customer of the date with the groups of the built-in schemes and the
-- two measures: 12-month profit (NULL when the business has no cost data) and 365-day CLV.
SELECT e.customer_key, e.segment_id, e.segment_name, s.rfm_segment, e.profit, c.clv_365d
FROM customer_economics e
LEFT JOIN customer_segments s ON s.as_of_date = e.as_of_date AND s.customer_key = e.customer_key
LEFT JOIN customer_clv c ON c.as_of_date = e.as_of_date AND c.customer_key = e.customer_key
WHERE e.as_of_date = :as_of_date
ORDER BY e.customer_key;

-- name: report_variance
SELECT scheme, scheme_kind, measure, basis, groups, customers, eta_squared, omega_squared
FROM scheme_variance WHERE as_of_date = :as_of_date
ORDER BY measure, basis, scheme_kind, scheme;

-- name: report_crosstab
SELECT scheme, legacy_label, segment_id, segment_name, customers, row_share
FROM legacy_crosstab WHERE as_of_date = :as_of_date
ORDER BY scheme, legacy_label, segment_id;

-- name: report_summary
SELECT scheme, labels, customers_labelled, customers_total, coverage, conflicts, records_staged
FROM legacy_label_summary WHERE as_of_date = :as_of_date
ORDER BY scheme;
