-- BG/NBD summary statistics per customer, computed in the warehouse
-- (Fader, Hardie & Lee 2005; the definitions lifetimes' summary_data_from_transaction_data uses):
-- orders on the same day are one transaction (value: their summed net amount);
--   frequency      = number of transaction days - 1 (repeat purchases)
--   recency        = last transaction day - first, in units of :unit_days days
--   t              = end of the period - first transaction day, in the same units
--   monetary_value = mean value of the repeat transaction days (0 without repeats)
-- Two periods per date, from one pass over the orders: 'full' ends at :as_of_date;
-- 'calibration' ends at :obs_end and counts only the transactions on or before it
-- (customers whose first transaction is later are not in it), with holdout_purchases =
-- the transaction days in (:obs_end, :as_of_date] and holdout_value = their summed net value
-- (0 in the full period; the CLV backtest compares them with the calibration fit's predictions).
-- MIN_BY (DuckDB and Snowflake) gives the first day's value: a customer has one row per day.
-- Values are summed as DECIMAL: a parallel SUM of DOUBLEs adds in a different order each
-- run (measured: 2,563 of 9,758 demo rows changed in the last bits from run to run, and the
-- fits and CLV with them, so a re-run did not equal the first run); decimal sums are exact.
-- Binds: :as_of_date, :obs_end (DATE), :unit_days.
DELETE FROM clv_summary WHERE as_of_date = :as_of_date;

INSERT INTO clv_summary (as_of_date, period, customer_key, frequency, recency, t, monetary_value, holdout_purchases,
                         holdout_value)
WITH days AS (
    SELECT i.customer_key, CAST(o.order_ts AS DATE) AS day,
        SUM(CAST(o.amount - COALESCE(o.returned_amount, 0) AS DECIMAL(38, 9))) AS value
    FROM stg_orders o
    JOIN identity_map i ON i.as_of_date = o.as_of_date
        AND i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND CAST(o.order_ts AS DATE) <= CAST(:as_of_date AS DATE)
    GROUP BY i.customer_key, CAST(o.order_ts AS DATE)
), per_customer AS (
    SELECT customer_key,
        MIN(day) AS first_day,
        MAX(day) AS last_day,
        COUNT(*) - 1 AS frequency,
        SUM(value) - MIN_BY(value, day) AS repeat_value,
        MAX(CASE WHEN day <= CAST(:obs_end AS DATE) THEN day END) AS cal_last_day,
        COUNT(CASE WHEN day <= CAST(:obs_end AS DATE) THEN 1 END) - 1 AS cal_frequency,
        SUM(CASE WHEN day <= CAST(:obs_end AS DATE) THEN value ELSE 0 END) - MIN_BY(value, day) AS cal_repeat_value,
        COUNT(CASE WHEN day > CAST(:obs_end AS DATE) THEN 1 END) AS holdout_purchases,
        SUM(CASE WHEN day > CAST(:obs_end AS DATE) THEN value ELSE 0 END) AS holdout_value
    FROM days GROUP BY customer_key
)
SELECT CAST(:as_of_date AS DATE), 'full', customer_key,
    CAST(frequency AS DOUBLE),
    DATEDIFF('day', first_day, last_day) / CAST(:unit_days AS DOUBLE),
    DATEDIFF('day', first_day, CAST(:as_of_date AS DATE)) / CAST(:unit_days AS DOUBLE),
    CASE WHEN frequency > 0 THEN CAST(repeat_value AS DOUBLE) / frequency ELSE 0 END,
    0.0, 0.0
FROM per_customer
UNION ALL
SELECT CAST(:as_of_date AS DATE), 'calibration', customer_key,
    CAST(cal_frequency AS DOUBLE),
    DATEDIFF('day', first_day, cal_last_day) / CAST(:unit_days AS DOUBLE),
    DATEDIFF('day', first_day, CAST(:obs_end AS DATE)) / CAST(:unit_days AS DOUBLE),
    CASE WHEN cal_frequency > 0 THEN CAST(cal_repeat_value AS DOUBLE) / cal_frequency ELSE 0 END,
    CAST(holdout_purchases AS DOUBLE), CAST(holdout_value AS DOUBLE)
FROM per_customer WHERE first_day <= CAST(:obs_end AS DATE);
