-- Classic RFM map for one as-of date, beside the behavioural segments.
-- Scores are quintiles (5 = best) over the customers of the date: R on days
-- since the last order (fewer is better), F on lifetime orders, M on lifetime
-- net revenue; ties are broken by customer_key so the scores are deterministic.
-- Segment names follow the widely used R x F score map (Putler, "RFM Analysis
-- for Successful Customer Segmentation"; the same grid as the rfm R package's
-- rfm_segment examples), with R=1,F=1 split out as "Lost":
--   R 5, F 4-5 Champions          | R 3-4, F 4-5 Loyal Customers
--   R 4-5, F 2-3 Potential Loyalists | R 5, F 1 New Customers | R 4, F 1 Promising
--   R 3, F 3 Need Attention       | R 3, F 1-2 About to Sleep
--   R 1-2, F 5 Can't Lose Them    | R 1-2, F 3-4 At Risk
--   R 1-2, F 1-2 Hibernating, except R 1, F 1 Lost
DELETE FROM customer_rfm WHERE as_of_date = :as_of_date;

INSERT INTO customer_rfm (as_of_date, customer_key, rfm_r, rfm_f, rfm_m, rfm_segment)
WITH scored AS (
    SELECT customer_key,
        NTILE(5) OVER (ORDER BY recency_days DESC, customer_key) AS r,
        NTILE(5) OVER (ORDER BY orders_lifetime, customer_key) AS f,
        NTILE(5) OVER (ORDER BY revenue_lifetime, customer_key) AS m
    FROM customer_features WHERE as_of_date = :as_of_date
)
SELECT CAST(:as_of_date AS DATE), customer_key, r, f, m,
    CASE
        WHEN r = 5 AND f >= 4 THEN 'Champions'
        WHEN r BETWEEN 3 AND 4 AND f >= 4 THEN 'Loyal Customers'
        WHEN r >= 4 AND f BETWEEN 2 AND 3 THEN 'Potential Loyalists'
        WHEN r = 5 AND f = 1 THEN 'New Customers'
        WHEN r = 4 AND f = 1 THEN 'Promising'
        WHEN r = 3 AND f = 3 THEN 'Need Attention'
        WHEN r = 3 AND f <= 2 THEN 'About to Sleep'
        WHEN r <= 2 AND f = 5 THEN 'Can''t Lose Them'
        WHEN r <= 2 AND f >= 3 THEN 'At Risk'
        WHEN r = 1 AND f = 1 THEN 'Lost'
        ELSE 'Hibernating'
    END
FROM scored;
