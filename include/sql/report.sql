-- Reads of the segment report (include/report/html.py), one per "-- name:" block.
-- Parameters:
--   :as_of_date  the report's date

-- name: clv_run
-- The date's CLV run: which model, its holdout error and check, or why there is no CLV.
SELECT * FROM clv_runs WHERE as_of_date = :as_of_date;

-- name: clv_backtest
SELECT * FROM clv_backtest WHERE as_of_date = :as_of_date ORDER BY row_kind, decile, metric;

-- name: claims_backtest
-- What the run said on an earlier date (backtest_date = as_of_date - horizon) and what those customers did.
SELECT * FROM claims_backtest WHERE as_of_date = :as_of_date
ORDER BY backtest_date, CASE claim_kind WHEN 'value' THEN 0 WHEN 'lifecycle' THEN 1 WHEN 'action' THEN 2 ELSE 3 END,
    claim, segment_name;

-- name: identity_run
SELECT * FROM identity_runs WHERE as_of_date = :as_of_date;
