-- Customer features for one as-of date, computed in the warehouse (include/features/build.py writes them).
-- One statement, "-- name: features": a SELECT that the writer wraps in its INSERT, so the same SQL fills
-- customer_features (the run's date) and backtest_features (an earlier date, from the run's own staged
-- data; include/backtest).
-- Binds:
--   :snapshot_date     the staged snapshot read: stg_* tables, identity_map, customers and
--                      support_channel_costs of that date;
--   :as_of_date        the date the features describe; every event is filtered to before :cutoff_ts
--                      (the start of the next day), so no feature reads data after :as_of_date;
--   :year_start_ts     cutoff - 365 days; :quarter_start_ts: cutoff - 90 days;
--   :cadence_prior_gaps, :fallback_cadence_days, :lapsing_gaps, :lapsed_gaps: the lifecycle
--                      constants of include.features.build (their reasons are there).
-- For customer_features :snapshot_date = :as_of_date; the backtest reads the run's snapshot as of an
-- earlier date.
-- Universe: customers with at least one order before the cutoff.
-- Windows: frequency, monetary, support, email rates over the last 365 days;
-- usage over the last 90 days; AOV, discount share, return rate over the lifetime.
-- "While active" rates describe how a customer behaves while buying, apart from
-- whether they still are (the lifecycle columns say that): they are normalised by the
-- customer's own order count or active span, all up to the as-of date:
-- discount_depth (discount / list value of the discounted orders), support per
-- order, cost per contact, sessions per month between the first and the last
-- month with usage, the open rate of email months that began up to 31 days
-- after an order (engagement while buying; lifetime rate when there is none),
-- clicks per open.
-- A rate without a denominator is unknown: the email rates are NULL for a customer with no sends in
-- their window (no opens, for clicks per open), never 0.
-- Lifecycle (whether a customer still buys, judged against their own cadence):
--   purchase_days    days with an order (orders of one day are one purchase, as BG/NBD counts them);
--   repeat_buyer     1 when the customer bought on two or more days, else 0;
--   cadence_days     the customer's mean gap between purchase days, shrunk towards the shop's typical
--                    gap (the median of the repeat buyers' own mean gaps) as if :cadence_prior_gaps more
--                    gaps of that length had been seen; a one-time buyer's cadence is the shop's typical
--                    gap (:fallback_cadence_days when nobody bought twice);
--   lifecycle_state  'new' (one-time buyer) or 'active' (repeat buyer) while the last purchase is at
--                    most :lapsing_gaps cadences old; 'lapsing' up to :lapsed_gaps cadences; 'lapsed' beyond.

-- name: features
WITH ids AS (
    SELECT source_system, source_id, customer_key
    FROM identity_map WHERE as_of_date = :snapshot_date
), orders AS (
    SELECT i.customer_key, o.order_ts, o.amount,
           COALESCE(o.discount, 0) AS discount,
           COALESCE(o.returned_amount, 0) AS returned_amount,
           COALESCE(o.channel, 'unknown') AS channel
    FROM stg_orders o
    JOIN ids i ON i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :snapshot_date AND o.order_ts < :cutoff_ts
), order_stats AS (
    SELECT customer_key,
        MIN(order_ts) AS first_order_ts,
        MAX(order_ts) AS last_order_ts,
        COUNT(*) AS orders_lifetime,
        COUNT(DISTINCT CAST(order_ts AS DATE)) AS purchase_days,
        SUM(amount - returned_amount) AS revenue_lifetime,
        SUM(amount) / COUNT(*) AS avg_order_value,
        SUM(CASE WHEN discount > 0 THEN 1 ELSE 0 END) * 1.0 / COUNT(*) AS discount_share,
        CASE WHEN SUM(CASE WHEN discount > 0 THEN amount ELSE 0 END) > 0
             THEN SUM(discount) / SUM(CASE WHEN discount > 0 THEN amount ELSE 0 END) ELSE 0 END AS discount_depth,
        CASE WHEN SUM(amount) > 0 THEN SUM(returned_amount) / SUM(amount) ELSE 0 END AS return_rate,
        SUM(CASE WHEN order_ts >= :year_start_ts THEN 1 ELSE 0 END) AS frequency,
        SUM(CASE WHEN order_ts >= :year_start_ts THEN amount - returned_amount ELSE 0 END) AS monetary
    FROM orders GROUP BY customer_key
), gaps AS (
    SELECT customer_key, purchase_days,
        DATEDIFF('day', CAST(first_order_ts AS DATE), CAST(last_order_ts AS DATE)) AS span_days,
        DATEDIFF('day', CAST(last_order_ts AS DATE), CAST(:as_of_date AS DATE)) AS days_since_last
    FROM order_stats
), shop AS (
    -- The shop's typical gap between purchases: the median of the repeat buyers' own mean gaps.
    SELECT COALESCE(MEDIAN(CASE WHEN purchase_days >= 2 THEN span_days * 1.0 / (purchase_days - 1) END),
                    :fallback_cadence_days) AS typical_gap
    FROM gaps
), lifecycle AS (
    SELECT g.customer_key, g.purchase_days, g.days_since_last,
        CASE WHEN g.purchase_days >= 2
             THEN (g.span_days + :cadence_prior_gaps * s.typical_gap) / (g.purchase_days - 1 + :cadence_prior_gaps)
             ELSE s.typical_gap END AS cadence_days
    FROM gaps g CROSS JOIN shop s
), channel_rank AS (
    SELECT customer_key, channel,
        ROW_NUMBER() OVER (PARTITION BY customer_key ORDER BY COUNT(*) DESC, channel) AS rn
    FROM orders GROUP BY customer_key, channel
), support AS (
    SELECT i.customer_key,
        SUM(CASE WHEN s.contact_ts >= :year_start_ts THEN 1 ELSE 0 END) AS contacts,
        SUM(CASE WHEN s.contact_ts >= :year_start_ts THEN COALESCE(s.cost, c.cost_per_contact, 0) ELSE 0 END) AS cost,
        COUNT(*) AS contacts_lifetime,
        SUM(COALESCE(s.cost, c.cost_per_contact, 0)) AS cost_lifetime
    FROM stg_support_contacts s
    JOIN ids i ON i.source_system = s.source_system AND i.source_id = s.source_id
    LEFT JOIN support_channel_costs c ON c.as_of_date = :snapshot_date AND c.channel = s.channel
    WHERE s.as_of_date = :snapshot_date AND s.contact_ts < :cutoff_ts
    GROUP BY i.customer_key
), usage AS (
    SELECT i.customer_key,
        SUM(CASE WHEN u.usage_date >= CAST(:quarter_start_ts AS DATE) THEN u.sessions ELSE 0 END) AS sessions,
        SUM(u.sessions) * 1.0 / (DATEDIFF('month', MIN(u.usage_date), MAX(u.usage_date)) + 1) AS sessions_per_month
    FROM stg_product_usage u
    JOIN ids i ON i.source_system = u.source_system AND i.source_id = u.source_id
    WHERE u.as_of_date = :snapshot_date AND u.usage_date < CAST(:cutoff_ts AS DATE)
    GROUP BY i.customer_key
), email AS (
    SELECT i.customer_key,
        SUM(CASE WHEN e.period_start >= CAST(:year_start_ts AS DATE) THEN e.sends ELSE 0 END) AS sends,
        SUM(CASE WHEN e.period_start >= CAST(:year_start_ts AS DATE) THEN COALESCE(e.opens, 0) ELSE 0 END) AS opens,
        SUM(CASE WHEN e.period_start >= CAST(:year_start_ts AS DATE) THEN COALESCE(e.clicks, 0) ELSE 0 END) AS clicks,
        SUM(e.sends) AS sends_lifetime,
        SUM(COALESCE(e.opens, 0)) AS opens_lifetime,
        SUM(COALESCE(e.clicks, 0)) AS clicks_lifetime,
        SUM(CASE WHEN e.period_start <= CAST(o.last_order_ts AS DATE) + INTERVAL 31 DAY THEN e.sends ELSE 0 END)
            AS sends_active,
        SUM(CASE WHEN e.period_start <= CAST(o.last_order_ts AS DATE) + INTERVAL 31 DAY
                 THEN COALESCE(e.opens, 0) ELSE 0 END) AS opens_active
    FROM stg_email_activity e
    JOIN ids i ON i.source_system = e.source_system AND i.source_id = e.source_id
    JOIN order_stats o ON o.customer_key = i.customer_key
    WHERE e.as_of_date = :snapshot_date AND e.period_start < CAST(:cutoff_ts AS DATE)
    GROUP BY i.customer_key
), plan_rank AS (
    SELECT i.customer_key, s.plan_tier,
        ROW_NUMBER() OVER (PARTITION BY i.customer_key ORDER BY s.valid_from DESC, s.plan_tier) AS rn
    FROM stg_subscriptions s
    JOIN ids i ON i.source_system = s.source_system AND i.source_id = s.source_id
    WHERE s.as_of_date = :snapshot_date AND s.valid_from < CAST(:cutoff_ts AS DATE)
)
SELECT
    CAST(:as_of_date AS DATE) AS as_of_date,
    o.customer_key,
    CAST(l.days_since_last AS DOUBLE) AS recency_days,
    CAST(o.frequency AS DOUBLE) AS frequency,
    CAST(o.monetary AS DOUBLE) AS monetary,
    CAST(o.avg_order_value AS DOUBLE) AS avg_order_value,
    CAST(o.orders_lifetime AS DOUBLE) AS orders_lifetime,
    CAST(o.revenue_lifetime AS DOUBLE) AS revenue_lifetime,
    CAST(DATEDIFF('day', CAST(LEAST(o.first_order_ts, COALESCE(c.first_seen_at, o.first_order_ts)) AS DATE),
                  CAST(:as_of_date AS DATE)) AS DOUBLE) AS tenure_days,
    CAST(o.discount_share AS DOUBLE) AS discount_share,
    CAST(o.return_rate AS DOUBLE) AS return_rate,
    CAST(COALESCE(s.contacts, 0) AS DOUBLE) AS support_contacts,
    CAST(COALESCE(s.cost, 0) AS DOUBLE) AS cost_to_serve,
    CAST(COALESCE(u.sessions, 0) AS DOUBLE) AS usage_sessions,
    CAST(CASE WHEN e.sends > 0 THEN e.opens / e.sends END AS DOUBLE) AS email_open_rate,
    CAST(CASE WHEN e.sends > 0 THEN e.clicks / e.sends END AS DOUBLE) AS email_click_rate,
    COALESCE(ch.channel, 'unknown') AS preferred_channel,
    COALESCE(p.plan_tier, 'unknown') AS plan_tier,
    COALESCE(c.region, 'unknown') AS region,
    CAST(o.discount_depth AS DOUBLE) AS discount_depth,
    CAST(COALESCE(s.contacts_lifetime, 0) / o.orders_lifetime AS DOUBLE) AS support_per_order,
    CAST(CASE WHEN s.contacts_lifetime > 0 THEN s.cost_lifetime / s.contacts_lifetime ELSE 0 END AS DOUBLE)
        AS cost_per_contact,
    CAST(COALESCE(u.sessions_per_month, 0) AS DOUBLE) AS sessions_per_active_month,
    CAST(CASE WHEN e.sends_active > 0 THEN e.opens_active / e.sends_active
              WHEN e.sends_lifetime > 0 THEN e.opens_lifetime / e.sends_lifetime END AS DOUBLE)
        AS email_open_rate_active,
    CAST(CASE WHEN e.opens_lifetime > 0 THEN e.clicks_lifetime / e.opens_lifetime END AS DOUBLE)
        AS email_click_per_open,
    CAST(l.purchase_days AS DOUBLE) AS purchase_days,
    CAST(CASE WHEN l.purchase_days >= 2 THEN 1 ELSE 0 END AS DOUBLE) AS repeat_buyer,
    CAST(l.cadence_days AS DOUBLE) AS cadence_days,
    CASE WHEN l.days_since_last <= :lapsing_gaps * l.cadence_days
              THEN CASE WHEN l.purchase_days >= 2 THEN 'active' ELSE 'new' END
         WHEN l.days_since_last <= :lapsed_gaps * l.cadence_days THEN 'lapsing'
         ELSE 'lapsed' END AS lifecycle_state
FROM order_stats o
JOIN lifecycle l ON l.customer_key = o.customer_key
LEFT JOIN customers c ON c.as_of_date = :snapshot_date AND c.customer_key = o.customer_key
LEFT JOIN channel_rank ch ON ch.customer_key = o.customer_key AND ch.rn = 1
LEFT JOIN support s ON s.customer_key = o.customer_key
LEFT JOIN usage u ON u.customer_key = o.customer_key
LEFT JOIN email e ON e.customer_key = o.customer_key
LEFT JOIN plan_rank p ON p.customer_key = o.customer_key AND p.rn = 1;
