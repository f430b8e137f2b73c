-- Scoring every customer of a date with models fitted elsewhere (include/segmentation/scoring.py,
-- include/clv/scoring.py), one statement per "-- name:" block.
--
-- The blocks are templates: the {placeholders} are filled by include.segmentation.scoring from a
-- fitted model's parameters (column names are checked identifiers, numbers are written as DOUBLE
-- literals, category values as quoted strings), so one statement carries the whole model and the
-- rows never leave the warehouse. Runs unchanged on DuckDB and Snowflake.
-- Parameters:
--   :as_of_date  the date scored
-- Placeholders:
--   {source}     the table read (customer_features, clv_summary, or a benchmark table)
--   {prepared}   one expression per model column: derived features, LN(1 + x) where the model
--                log-transforms, (x - mean) / scale * group weight; categorical traits as text
--   {distances}  d_0 .. d_{k-1}: squared Euclidean distance to each numeric prototype plus
--                gamma x the number of categorical mismatches (k-prototypes' cost)
--   {argmin}     the segment of the smallest distance; ties go to the lower prototype index,
--                as numpy's argmin breaks them
--   {checks}     per model column: rows NULL (or negative where LN(1 + x) needs x >= 0) and one
--                example customer_key, so bad input is named instead of scored as NULL
--   {columns}    the columns a chunked read needs

-- name: assign_segments
SELECT customer_key, {argmin} AS segment_id
FROM (
    SELECT customer_key,
           {distances}
    FROM (
        SELECT customer_key,
               {prepared}
        FROM {source}
        WHERE as_of_date = :as_of_date
    ) AS prepared
) AS distances;

-- name: input_problems
SELECT {checks}
FROM {source}
WHERE as_of_date = :as_of_date;

-- name: feature_rows
-- A date's feature rows, streamed and cut into chunks by the reader (one scan, no sort).
SELECT {columns}
FROM {source}
WHERE as_of_date = :as_of_date;

-- name: clv_summary_rows
-- A date's full-period CLV summary (frequency, recency, t, monetary_value), streamed likewise.
SELECT customer_key, frequency, recency, t, monetary_value
FROM {source}
WHERE as_of_date = :as_of_date AND period = 'full';
