-- BG/NBD summary statistics per customer, computed in the warehouse
-- (Fader, Hardie & Lee 2005; the definitions lifetimes' summary_data_from_transaction_data uses):
-- orders on the same day are one transaction (value: their summed net amount);
--   frequency      = number of transaction days - 1 (repeat purchases)
--   recency        = last transaction day - first, in units of :unit_days days
--   t              = :obs_end - first transaction day, in the same units
--   monetary_value = mean value of the repeat transaction days (0 without repeats)
-- Only transactions on or before :obs_end count. holdout_purchases counts the
-- transaction days in (:obs_end, :as_of_date] (0 when :obs_end = :as_of_date).
-- Binds: :as_of_date, :obs_end (DATE), :period ('full' or 'calibration'), :unit_days.
DELETE FROM clv_summary WHERE as_of_date = :as_of_date AND period = :period;

INSERT INTO clv_summary (as_of_date, period, customer_key, frequency, recency, t, monetary_value, holdout_purchases)
WITH days AS (
    SELECT i.customer_key, CAST(o.order_ts AS DATE) AS day,
        SUM(o.amount - COALESCE(o.returned_amount, 0)) AS value
    FROM stg_orders o
    JOIN identity_map i ON i.as_of_date = o.as_of_date
        AND i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND CAST(o.order_ts AS DATE) <= CAST(:as_of_date AS DATE)
    GROUP BY i.customer_key, CAST(o.order_ts AS DATE)
), ranked AS (
    SELECT customer_key, day, value,
        ROW_NUMBER() OVER (PARTITION BY customer_key ORDER BY day) AS n
    FROM days WHERE day <= CAST(:obs_end AS DATE)
), calibration AS (
    SELECT customer_key,
        COUNT(*) - 1 AS frequency,
        MIN(day) AS first_day, MAX(day) AS last_day,
        SUM(CASE WHEN n > 1 THEN value ELSE 0 END) AS repeat_value
    FROM ranked GROUP BY customer_key
), holdout AS (
    SELECT customer_key, COUNT(*) AS purchases
    FROM days WHERE day > CAST(:obs_end AS DATE) GROUP BY customer_key
)
SELECT CAST(:as_of_date AS DATE), :period, c.customer_key,
    CAST(c.frequency AS DOUBLE),
    DATEDIFF('day', c.first_day, c.last_day) / CAST(:unit_days AS DOUBLE),
    DATEDIFF('day', c.first_day, CAST(:obs_end AS DATE)) / CAST(:unit_days AS DOUBLE),
    CASE WHEN c.frequency > 0 THEN c.repeat_value / c.frequency ELSE 0 END,
    CAST(COALESCE(h.purchases, 0) AS DOUBLE)
FROM calibration c
LEFT JOIN holdout h ON h.customer_key = c.customer_key;
