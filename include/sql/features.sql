-- customer_features for one as-of date, computed in the warehouse.
-- Binds: :as_of_date (DATE), :cutoff_ts (start of the next day, exclusive),
-- :year_start_ts (cutoff - 365 days), :quarter_start_ts (cutoff - 90 days).
-- Every source is filtered to events before :cutoff_ts, so no feature reads
-- data after the as-of date. Universe: customers with at least one order.
-- Windows: frequency, monetary, support, email rates over the last 365 days;
-- usage over the last 90 days; AOV, discount share, return rate over the lifetime.
-- "While active" rates describe how a customer behaves while buying, apart from
-- whether they still are (recency says that): they are normalised by the
-- customer's own order count or active span, all up to the as-of date:
-- discount_depth (discount / list value of the discounted orders), support per
-- order, cost per contact, sessions per month between the first and the last
-- month with usage, the open rate of email months that began up to 31 days
-- after an order (engagement while buying; lifetime rate when there is none),
-- clicks per open.

DELETE FROM customer_features WHERE as_of_date = :as_of_date;

INSERT INTO customer_features (
    as_of_date, customer_key, recency_days, frequency, monetary, avg_order_value,
    orders_lifetime, revenue_lifetime, tenure_days, discount_share, return_rate,
    support_contacts, cost_to_serve, usage_sessions, email_open_rate,
    email_click_rate, preferred_channel, plan_tier, region,
    discount_depth, support_per_order, cost_per_contact, sessions_per_active_month,
    email_open_rate_active, email_click_per_open
)
WITH ids AS (
    SELECT source_system, source_id, customer_key
    FROM identity_map WHERE as_of_date = :as_of_date
), orders AS (
    SELECT i.customer_key, o.order_ts, o.amount,
           COALESCE(o.discount, 0) AS discount,
           COALESCE(o.returned_amount, 0) AS returned_amount,
           COALESCE(o.channel, 'unknown') AS channel
    FROM stg_orders o
    JOIN ids i ON i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND o.order_ts < :cutoff_ts
), order_stats AS (
    SELECT customer_key,
        MIN(order_ts) AS first_order_ts,
        MAX(order_ts) AS last_order_ts,
        COUNT(*) AS orders_lifetime,
        SUM(amount - returned_amount) AS revenue_lifetime,
        SUM(amount) / COUNT(*) AS avg_order_value,
        SUM(CASE WHEN discount > 0 THEN 1 ELSE 0 END) * 1.0 / COUNT(*) AS discount_share,
        CASE WHEN SUM(CASE WHEN discount > 0 THEN amount ELSE 0 END) > 0
             THEN SUM(discount) / SUM(CASE WHEN discount > 0 THEN amount ELSE 0 END) ELSE 0 END AS discount_depth,
        CASE WHEN SUM(amount) > 0 THEN SUM(returned_amount) / SUM(amount) ELSE 0 END AS return_rate,
        SUM(CASE WHEN order_ts >= :year_start_ts THEN 1 ELSE 0 END) AS frequency,
        SUM(CASE WHEN order_ts >= :year_start_ts THEN amount - returned_amount ELSE 0 END) AS monetary
    FROM orders GROUP BY customer_key
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
    LEFT JOIN support_channel_costs c ON c.as_of_date = :as_of_date AND c.channel = s.channel
    WHERE s.as_of_date = :as_of_date AND s.contact_ts < :cutoff_ts
    GROUP BY i.customer_key
), usage AS (
    SELECT i.customer_key,
        SUM(CASE WHEN u.usage_date >= CAST(:quarter_start_ts AS DATE) THEN u.sessions ELSE 0 END) AS sessions,
        SUM(u.sessions) * 1.0 / (DATEDIFF('month', MIN(u.usage_date), MAX(u.usage_date)) + 1) AS sessions_per_month
    FROM stg_product_usage u
    JOIN ids i ON i.source_system = u.source_system AND i.source_id = u.source_id
    WHERE u.as_of_date = :as_of_date AND u.usage_date < CAST(:cutoff_ts AS DATE)
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
    WHERE e.as_of_date = :as_of_date AND e.period_start < CAST(:cutoff_ts AS DATE)
    GROUP BY i.customer_key
), plan_rank AS (
    SELECT i.customer_key, s.plan_tier,
        ROW_NUMBER() OVER (PARTITION BY i.customer_key ORDER BY s.valid_from DESC, s.plan_tier) AS rn
    FROM stg_subscriptions s
    JOIN ids i ON i.source_system = s.source_system AND i.source_id = s.source_id
    WHERE s.as_of_date = :as_of_date AND s.valid_from < CAST(:cutoff_ts AS DATE)
)
SELECT
    CAST(:as_of_date AS DATE) AS as_of_date,
    o.customer_key,
    CAST(DATEDIFF('day', CAST(o.last_order_ts AS DATE), CAST(:as_of_date AS DATE)) AS DOUBLE) AS recency_days,
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
    CAST(CASE WHEN e.sends > 0 THEN e.opens / e.sends ELSE 0 END AS DOUBLE) AS email_open_rate,
    CAST(CASE WHEN e.sends > 0 THEN e.clicks / e.sends ELSE 0 END AS DOUBLE) AS email_click_rate,
    COALESCE(ch.channel, 'unknown') AS preferred_channel,
    COALESCE(p.plan_tier, 'unknown') AS plan_tier,
    COALESCE(c.region, 'unknown') AS region,
    CAST(o.discount_depth AS DOUBLE) AS discount_depth,
    CAST(COALESCE(s.contacts_lifetime, 0) / o.orders_lifetime AS DOUBLE) AS support_per_order,
    CAST(CASE WHEN s.contacts_lifetime > 0 THEN s.cost_lifetime / s.contacts_lifetime ELSE 0 END AS DOUBLE)
        AS cost_per_contact,
    CAST(COALESCE(u.sessions_per_month, 0) AS DOUBLE) AS sessions_per_active_month,
    CAST(CASE WHEN e.sends_active > 0 THEN e.opens_active / e.sends_active
              WHEN e.sends_lifetime > 0 THEN e.opens_lifetime / e.sends_lifetime ELSE 0 END AS DOUBLE)
        AS email_open_rate_active,
    CAST(CASE WHEN e.opens_lifetime > 0 THEN e.clicks_lifetime / e.opens_lifetime ELSE 0 END AS DOUBLE)
        AS email_click_per_open
FROM order_stats o
LEFT JOIN customers c ON c.as_of_date = :as_of_date AND c.customer_key = o.customer_key
LEFT JOIN channel_rank ch ON ch.customer_key = o.customer_key AND ch.rn = 1
LEFT JOIN support s ON s.customer_key = o.customer_key
LEFT JOIN usage u ON u.customer_key = o.customer_key
LEFT JOIN email e ON e.customer_key = o.customer_key
LEFT JOIN plan_rank p ON p.customer_key = o.customer_key AND p.rn = 1;
