{#-
Money rules that need every staged row of a date, run by include/extract/validate.py after
the tables are staged and inside the same transaction (a Jinja template of "-- name:"
statements; DML only, so it joins a Snowflake transaction without committing it).

Context:
  dialect        'duckdb' or 'snowflake'
  has_returns    raw_returns exists (stg_returns was staged for this date)
  outliers       one entry per staged money column flagged when far above typical:
                 raw, staged, key (the key column), column
Binds: :as_of_date, :outlier_log_mads.

The rule for returns (stated once, here):
  A return never makes an order's net value (amount - returned_amount) negative. A staged
  order's own returned_amount above its amount is set to the amount (flagged). Each staged
  return (raw_returns) is matched, in this order:
  1. to the order it names (order_id), when that order is the same customer record's and was
     placed at or before the return, up to the order's net value (several returns of one
     order in time order);
  2. what is left, to the same customer record's orders placed at or before the return,
     latest order first, latest return first, up to each order's remaining net value;
  3. what is still left is unattributed: kept in stg_returns.unattributed and summed in
     return_attribution, never subtracted from anything (typically the return of a purchase
     made before the export begins).
  Matched amounts are added to stg_orders.returned_amount, so features, RFM, CLV summaries
  and economics (which all read amount - returned_amount) see every matched return and no
  order below zero: a customer whose purchases were all returned has net spend 0, which
  segmentation takes (log1p) and Gamma-Gamma leaves out (it fits positive spend only).
  Step 2 is a greedy allocation that is maximal for the constraint "only purchases at or
  before the return": processing each customer's events from the latest back, a purchase
  serves the returns after it that are still open, the latest first. With D(k) and S(k) the
  running sums of return and purchase amounts in that order, the matched purchase total is
  U(k) = S(k) + min(0, min over j <= k of D(j) - S(j)) (window functions, no loop); a
  purchase's match is U(k) - U(k-1), and the latest returns take the first U(final).
  Amounts are summed as DECIMAL(38, 6): exact, so a re-run gives the same figures.
-#}

-- name: flag_returned_above_amount
INSERT INTO extract_flags (as_of_date, source_table, source_key, column_name, rule, detail)
SELECT CAST(:as_of_date AS DATE), 'raw_orders', order_id, 'returned_amount', 'returned_above_amount',
    'returned_amount=' || CAST(returned_amount AS VARCHAR) || ' > amount=' || CAST(amount AS VARCHAR)
    || ': set to the amount'
FROM stg_orders WHERE as_of_date = :as_of_date AND returned_amount > amount;

-- name: clip_returned_to_amount
UPDATE stg_orders SET returned_amount = amount WHERE as_of_date = :as_of_date AND returned_amount > amount;
{% if has_returns %}

{#- The matching of returns to orders, as the CTEs of one statement (used by two). -#}
{% set window = 'PARTITION BY source_system, source_id ORDER BY ts DESC, kind, id' %}
{% set matching %}
WITH ret AS (
    SELECT return_id, source_system, source_id, return_ts, CAST(amount AS DECIMAL(38, 6)) AS amount, order_id
    FROM stg_returns WHERE as_of_date = :as_of_date
), ord AS (
    {#- Only the orders of customer records with a return. #}
    SELECT o.order_id, o.source_system, o.source_id, o.order_ts,
        CAST(o.amount AS DECIMAL(38, 6)) - CAST(COALESCE(o.returned_amount, 0) AS DECIMAL(38, 6)) AS capacity
    FROM stg_orders o
    WHERE o.as_of_date = :as_of_date AND EXISTS (
        SELECT 1 FROM ret r WHERE r.source_system = o.source_system AND r.source_id = o.source_id)
), keyed AS (
    {#- 1. Returns naming an order of the same record placed at or before them. #}
    SELECT r.return_id, r.order_id, r.amount, o.capacity,
        SUM(r.amount) OVER (PARTITION BY r.order_id ORDER BY r.return_ts, r.return_id
                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running
    FROM ret r
    JOIN ord o ON o.order_id = r.order_id AND o.source_system = r.source_system
        AND o.source_id = r.source_id AND o.order_ts <= r.return_ts
), keyed_match AS (
    SELECT return_id, order_id,
        CASE WHEN capacity - (running - amount) <= 0 THEN CAST(0 AS DECIMAL(38, 6))
             WHEN capacity - (running - amount) < amount THEN capacity - (running - amount)
             ELSE amount END AS matched
    FROM keyed
), keyed_by_order AS (
    SELECT order_id, SUM(matched) AS matched FROM keyed_match GROUP BY order_id
), events AS (
    {#- 2. What is left of every return (kind 0) and order (kind 1); at one time, returns come
        first from the latest back, so a purchase can serve a return made at the same time. #}
    SELECT r.source_system, r.source_id, r.return_ts AS ts, 0 AS kind, r.return_id AS id,
        r.amount - COALESCE(k.matched, 0) AS demand, CAST(0 AS DECIMAL(38, 6)) AS supply,
        COALESCE(k.matched, 0) AS keyed
    FROM ret r LEFT JOIN keyed_match k ON k.return_id = r.return_id
    UNION ALL
    SELECT o.source_system, o.source_id, o.order_ts, 1, o.order_id,
        CAST(0 AS DECIMAL(38, 6)), o.capacity - COALESCE(k.matched, 0), COALESCE(k.matched, 0)
    FROM ord o LEFT JOIN keyed_by_order k ON k.order_id = o.order_id
), running AS (
    SELECT e.*,
        SUM(demand) OVER ({{ window }} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS d_run,
        SUM(supply) OVER ({{ window }} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s_run
    FROM events e
), lowest AS (
    SELECT r.*, MIN(d_run - s_run) OVER ({{ window }} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS low
    FROM running r
), used AS (
    SELECT l.*, s_run + CASE WHEN low < 0 THEN low ELSE 0 END AS u_run FROM lowest l
), matched AS (
    SELECT u.*,
        u_run - COALESCE(LAG(u_run) OVER ({{ window }}), 0) AS step,
        MAX(u_run) OVER (PARTITION BY source_system, source_id) AS u_total
    FROM used u
), order_match AS (
    SELECT id AS order_id, keyed + step AS matched FROM matched WHERE kind = 1 AND keyed + step > 0
), return_match AS (
    {#- 3. The latest returns take the matched total first; the earliest are left over. #}
    SELECT id AS return_id, keyed,
        CASE WHEN d_run < u_total THEN d_run ELSE u_total END
        - CASE WHEN d_run - demand < u_total THEN d_run - demand ELSE u_total END AS prior
    FROM matched WHERE kind = 0
)
{% endset %}

{#- The returns first: both statements read the orders' returned_amount before matching. #}
-- name: record_return_matches
UPDATE stg_returns SET matched_to_order = CAST(m.keyed AS DOUBLE), matched_to_prior = CAST(m.prior AS DOUBLE),
    unattributed = CAST(CAST(stg_returns.amount AS DECIMAL(38, 6)) - m.keyed - m.prior AS DOUBLE)
FROM ({{ matching }} SELECT return_id, keyed, prior FROM return_match) m
WHERE stg_returns.as_of_date = :as_of_date AND stg_returns.return_id = m.return_id;

-- name: match_returns_to_orders
UPDATE stg_orders SET returned_amount = CASE
        WHEN CAST(COALESCE(stg_orders.returned_amount, 0) AS DECIMAL(38, 6)) + m.matched >= CAST(stg_orders.amount AS DECIMAL(38, 6))
        THEN stg_orders.amount
        ELSE CAST(CAST(COALESCE(stg_orders.returned_amount, 0) AS DECIMAL(38, 6)) + m.matched AS DOUBLE) END
FROM ({{ matching }} SELECT order_id, matched FROM order_match) m
WHERE stg_orders.as_of_date = :as_of_date AND stg_orders.order_id = m.order_id;
{% endif %}

-- name: delete_attribution
DELETE FROM return_attribution WHERE as_of_date = :as_of_date;

-- name: insert_attribution
{#- Where the returned money went, for the date: matched to the named order, to earlier
    purchases, or unattributed; and the customer records left with no net spend. #}
INSERT INTO return_attribution (as_of_date, returns, returned_amount, matched_to_order, matched_to_prior,
    unattributed_amount, returns_unattributed, records_with_returns, records_zero_net_spend,
    order_returned_amount)
SELECT CAST(:as_of_date AS DATE),
{% if has_returns %}
    r.returns, r.amount, r.to_order, r.to_prior, r.unattributed, r.returns_unattributed, r.records,
{% else %}
    0, 0.0, 0.0, 0.0, 0.0, 0, 0,
{% endif %}
    o.zero_net, o.returned
FROM (
    SELECT SUM(CASE WHEN gross > 0 AND net <= 0 THEN 1 ELSE 0 END) AS zero_net,
        SUM(returned) AS returned
    FROM (
        SELECT source_system, source_id, SUM(amount) AS gross, SUM(amount - COALESCE(returned_amount, 0)) AS net,
            SUM(COALESCE(returned_amount, 0)) AS returned
        FROM stg_orders WHERE as_of_date = :as_of_date GROUP BY source_system, source_id
    ) per_record
) o
{% if has_returns %}
CROSS JOIN (
    SELECT COUNT(*) AS returns, COALESCE(SUM(amount), 0) AS amount,
        COALESCE(SUM(matched_to_order), 0) AS to_order, COALESCE(SUM(matched_to_prior), 0) AS to_prior,
        COALESCE(SUM(unattributed), 0) AS unattributed,
        SUM(CASE WHEN unattributed > 0 THEN 1 ELSE 0 END) AS returns_unattributed,
        COUNT(DISTINCT source_system || '|' || source_id) AS records
    FROM stg_returns WHERE as_of_date = :as_of_date
) r
{% endif %};
{% for o in outliers %}

-- name: flag_outliers_{{ o.raw }}
{#- A statistical rule flags and keeps: the amount's logarithm more than :outlier_log_mads
    robust standard deviations (1.4826 x the median absolute deviation) above the median of
    the date's staged amounts (at least 30 positive ones, with some spread). #}
INSERT INTO extract_flags (as_of_date, source_table, source_key, column_name, rule, detail)
WITH v AS (
    SELECT {{ o.key }} AS k, {{ o.column }} AS x, LN({{ o.column }}) AS lx
    FROM {{ o.staged }} WHERE as_of_date = :as_of_date AND {{ o.column }} > 0
), centre AS (
    SELECT MEDIAN(lx) AS m, COUNT(*) AS n FROM v
), spread AS (
    SELECT MEDIAN(ABS(v.lx - centre.m)) AS mad FROM v CROSS JOIN centre
)
SELECT CAST(:as_of_date AS DATE), '{{ o.raw }}', v.k, '{{ o.column }}', 'far_above_typical',
    '{{ o.column }}=' || CAST(v.x AS VARCHAR) || ' above '
    || CAST(ROUND(EXP(centre.m + :outlier_log_mads * 1.4826 * spread.mad), 2) AS VARCHAR)
    || ' (median ' || CAST(ROUND(EXP(centre.m), 2) AS VARCHAR) || '): kept, flagged'
FROM v CROSS JOIN centre CROSS JOIN spread
WHERE centre.n >= 30 AND spread.mad > 0 AND v.lx > centre.m + :outlier_log_mads * 1.4826 * spread.mad;
{% endfor %}
