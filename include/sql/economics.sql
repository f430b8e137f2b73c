-- Segment economics for one as-of date, computed in the warehouse.
-- Binds: :as_of_date (DATE), :cutoff_ts (start of the next day, exclusive),
-- :year_start_ts (cutoff - 365 days), :margin (gross margin on net revenue), :margin_assumed (TRUE when
-- :margin is the settings' default, an assumption the report states beside every margin figure),
-- :per_customer (yearly servicing cost per customer), :per_order (servicing cost per order),
-- :window_start_ts (cutoff - w days), :previous_window_start_ts (cutoff - 2w days),
-- w = retention_window_days; :currency_code, :currency_symbol (of the amounts, stored with the rows).
-- Window: the 365 days up to the as-of date, as for the RFM monetary feature.
-- revenue = amount - returned_amount (what customers kept paying for);
-- discount_spend = the markdowns given on those orders (already out of revenue);
-- cost_to_serve = support contacts x cost per contact by channel + servicing costs;
-- profit = revenue x margin - cost_to_serve.
-- Cost is known only when there is support contact data for the date or a
-- servicing cost is configured; otherwise cost_to_serve and profit are NULL
-- (unknown), never 0 or a made-up default.

DELETE FROM customer_economics WHERE as_of_date = :as_of_date;

INSERT INTO customer_economics (
    as_of_date, customer_key, segment_id, segment_name, orders, revenue, discount_spend,
    gross_margin, support_cost, servicing_cost, cost_to_serve, profit, p_alive, clv_365d
)
WITH ids AS (
    SELECT source_system, source_id, customer_key FROM identity_map WHERE as_of_date = :as_of_date
), cost_data AS (
    SELECT (SELECT COUNT(*) FROM stg_support_contacts WHERE as_of_date = :as_of_date) > 0
        OR :per_customer > 0 OR :per_order > 0 AS known
), orders AS (
    SELECT i.customer_key, COUNT(*) AS orders,
        SUM(o.amount - COALESCE(o.returned_amount, 0)) AS revenue,
        SUM(COALESCE(o.discount, 0)) AS discount_spend
    FROM stg_orders o
    JOIN ids i ON i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND o.order_ts >= :year_start_ts AND o.order_ts < :cutoff_ts
    GROUP BY i.customer_key
), base AS (
    SELECT s.customer_key, s.segment_id, s.segment_name,
        COALESCE(o.orders, 0) AS orders,
        COALESCE(o.revenue, 0) AS revenue,
        COALESCE(o.discount_spend, 0) AS discount_spend,
        CASE WHEN k.known THEN COALESCE(f.cost_to_serve, 0) END AS support_cost,
        CASE WHEN k.known THEN :per_customer + COALESCE(o.orders, 0) * :per_order END AS servicing_cost,
        c.p_alive, c.clv_365d
    FROM customer_segments s
    CROSS JOIN cost_data k
    LEFT JOIN orders o ON o.customer_key = s.customer_key
    LEFT JOIN customer_features f ON f.as_of_date = :as_of_date AND f.customer_key = s.customer_key
    LEFT JOIN customer_clv c ON c.as_of_date = :as_of_date AND c.customer_key = s.customer_key
    WHERE s.as_of_date = :as_of_date
)
SELECT
    CAST(:as_of_date AS DATE), customer_key, segment_id, segment_name,
    CAST(orders AS BIGINT),
    CAST(revenue AS DOUBLE),
    CAST(discount_spend AS DOUBLE),
    CAST(revenue * :margin AS DOUBLE),
    CAST(support_cost AS DOUBLE),
    CAST(servicing_cost AS DOUBLE),
    CAST(support_cost + servicing_cost AS DOUBLE),
    CAST(revenue * :margin - support_cost - servicing_cost AS DOUBLE),
    p_alive, clv_365d
FROM base;

DELETE FROM segment_economics WHERE as_of_date = :as_of_date;

INSERT INTO segment_economics (
    as_of_date, segment_id, segment_name, customers, customer_share, revenue, gross_margin,
    discount_spend, support_cost, servicing_cost, cost_to_serve, cost_known, profit, profit_per_customer,
    profit_share, revenue_share, mean_clv_365d, total_clv_365d, alive_share, retention_base,
    repeat_retention, previous_date, previous_customers, label_kept_customers, label_stability,
    currency_code, currency_symbol, gross_margin_rate, gross_margin_assumed
)
WITH seg AS (
    SELECT segment_id, MIN(segment_name) AS segment_name, COUNT(*) AS customers,
        SUM(revenue) AS revenue, SUM(gross_margin) AS gross_margin, SUM(discount_spend) AS discount_spend,
        SUM(support_cost) AS support_cost, SUM(servicing_cost) AS servicing_cost,
        SUM(cost_to_serve) AS cost_to_serve, SUM(profit) AS profit,
        -- COUNT of a column counts its non-NULL values: cost is known for all customers or none.
        COUNT(cost_to_serve) = COUNT(*) AS cost_known,
        AVG(clv_365d) AS mean_clv_365d, SUM(clv_365d) AS total_clv_365d,
        AVG(CASE WHEN p_alive >= 0.5 THEN 1.0 WHEN p_alive IS NOT NULL THEN 0.0 END) AS alive_share
    FROM customer_economics WHERE as_of_date = :as_of_date GROUP BY segment_id
), totals AS (
    SELECT SUM(customers) AS customers, SUM(revenue) AS revenue, SUM(profit) AS profit
    FROM seg
), activity AS (
    -- Per customer: ordered in the window before last (d-2w, d-w] and in the last window (d-w, d].
    SELECT i.customer_key,
        MAX(CASE WHEN o.order_ts < :window_start_ts THEN 1 ELSE 0 END) AS active_before,
        MAX(CASE WHEN o.order_ts >= :window_start_ts THEN 1 ELSE 0 END) AS active_now
    FROM stg_orders o
    JOIN identity_map i ON i.as_of_date = :as_of_date
        AND i.source_system = o.source_system AND i.source_id = o.source_id
    WHERE o.as_of_date = :as_of_date AND o.order_ts >= :previous_window_start_ts AND o.order_ts < :cutoff_ts
    GROUP BY i.customer_key
), retention AS (
    SELECT s.segment_id, COUNT(*) AS retention_base, SUM(a.active_now) AS repeat_buyers
    FROM customer_segments s
    JOIN activity a ON a.customer_key = s.customer_key AND a.active_before = 1
    WHERE s.as_of_date = :as_of_date
    GROUP BY s.segment_id
), prev_date AS (
    SELECT MAX(as_of_date) AS d FROM customer_segments WHERE as_of_date < :as_of_date
), prev AS (
    -- Label stability: the share of last run's segment members published in the same segment now.
    SELECT p.segment_id, COUNT(*) AS previous_customers,
        SUM(CASE WHEN n.segment_id = p.segment_id THEN 1 ELSE 0 END) AS label_kept_customers
    FROM customer_segments p
    JOIN prev_date d ON p.as_of_date = d.d
    LEFT JOIN customer_segments n ON n.as_of_date = :as_of_date AND n.customer_key = p.customer_key
    GROUP BY p.segment_id
)
SELECT
    CAST(:as_of_date AS DATE), s.segment_id, s.segment_name, s.customers,
    CAST(s.customers AS DOUBLE) / t.customers,
    s.revenue, s.gross_margin, s.discount_spend, s.support_cost, s.servicing_cost, s.cost_to_serve,
    s.cost_known, s.profit, s.profit / s.customers,
    -- Share of the total profit; segments with a loss show a negative share.
    CASE WHEN t.profit <> 0 THEN s.profit / t.profit END,
    CASE WHEN t.revenue <> 0 THEN s.revenue / t.revenue END,
    s.mean_clv_365d, s.total_clv_365d, s.alive_share,
    CAST(COALESCE(r.retention_base, 0) AS BIGINT),
    CASE WHEN r.retention_base > 0 THEN CAST(r.repeat_buyers AS DOUBLE) / r.retention_base END,
    (SELECT d FROM prev_date),
    p.previous_customers, p.label_kept_customers,
    CASE WHEN p.previous_customers > 0 THEN CAST(p.label_kept_customers AS DOUBLE) / p.previous_customers END,
    CAST(:currency_code AS VARCHAR), CAST(:currency_symbol AS VARCHAR),
    CAST(:margin AS DOUBLE), CAST(:margin_assumed AS BOOLEAN)
FROM seg s CROSS JOIN totals t
LEFT JOIN prev p ON p.segment_id = s.segment_id
LEFT JOIN retention r ON r.segment_id = s.segment_id;
