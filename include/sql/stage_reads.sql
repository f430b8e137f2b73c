-- Small reads the extract and economics stages log to MLflow, one per "-- name:" block.
-- Parameters:
--   :as_of_date  the run's date

-- name: quarantine_counts
SELECT source_table, reason, COUNT(*) AS rows FROM quarantine WHERE as_of_date = :as_of_date
GROUP BY source_table, reason ORDER BY source_table, reason;

-- name: extract_log
SELECT * FROM extract_log WHERE as_of_date = :as_of_date ORDER BY source_table;

-- name: field_issue_counts
-- Optional values nulled (rows kept), per table, column and reason.
SELECT source_table, column_name, reason, COUNT(*) AS rows FROM field_issues WHERE as_of_date = :as_of_date
GROUP BY source_table, column_name, reason ORDER BY source_table, column_name, reason;

-- name: extract_flag_counts
-- Staged values kept but flagged or adjusted, per table, column and rule.
SELECT source_table, column_name, rule, COUNT(*) AS rows FROM extract_flags WHERE as_of_date = :as_of_date
GROUP BY source_table, column_name, rule ORDER BY source_table, column_name, rule;

-- name: return_attribution
SELECT * FROM return_attribution WHERE as_of_date = :as_of_date;

-- name: segment_economics
SELECT * FROM segment_economics WHERE as_of_date = :as_of_date ORDER BY profit DESC NULLS LAST, revenue DESC;
