-- Tables the pipeline writes. Every table carries as_of_date: a run replaces
-- its own date's rows (DELETE + INSERT in one transaction) and never another's.
-- Types are the common subset of DuckDB and Snowflake.

CREATE TABLE IF NOT EXISTS stg_identity_records (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email VARCHAR, phone VARCHAR,
    address VARCHAR, postcode VARCHAR, date_of_birth DATE, device_id VARCHAR,
    region VARCHAR, created_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS stg_orders (
    as_of_date DATE, order_id VARCHAR, source_system VARCHAR, source_id VARCHAR,
    order_ts TIMESTAMP, amount DOUBLE, discount DOUBLE, returned_amount DOUBLE,
    channel VARCHAR, category VARCHAR
);

CREATE TABLE IF NOT EXISTS stg_support_contacts (
    as_of_date DATE, contact_id VARCHAR, source_system VARCHAR, source_id VARCHAR,
    contact_ts TIMESTAMP, channel VARCHAR, cost DOUBLE
);

CREATE TABLE IF NOT EXISTS stg_product_usage (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR,
    usage_date DATE, sessions DOUBLE
);

CREATE TABLE IF NOT EXISTS stg_email_activity (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR,
    period_start DATE, sends DOUBLE, opens DOUBLE, clicks DOUBLE
);

CREATE TABLE IF NOT EXISTS stg_subscriptions (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR,
    plan_tier VARCHAR, valid_from DATE
);

CREATE TABLE IF NOT EXISTS quarantine (
    as_of_date DATE, source_table VARCHAR, source_key VARCHAR,
    reason VARCHAR, detail VARCHAR
);

CREATE TABLE IF NOT EXISTS extract_log (
    as_of_date DATE, source_table VARCHAR, rows_in_scope BIGINT,
    rows_staged BIGINT, rows_quarantined BIGINT, rows_after_as_of BIGINT,
    fields_nulled BIGINT,
    -- Added later (issue #31): staged values flagged (kept) or adjusted, listed in extract_flags.
    rows_flagged BIGINT
);

-- identity_map.record_hash: fingerprint of the record's normalised linkage values; an incremental
-- identity run links only records whose fingerprint changed (include/identity/incremental.py).
CREATE TABLE IF NOT EXISTS identity_map (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR,
    customer_key VARCHAR, cluster_confidence DOUBLE, match_method VARCHAR, key_since DATE,
    record_hash VARCHAR
);

-- identity_linkage_records: the normalised linkage values each identity run used, per record
-- (normalised PII, owned by resolve_identity like identity_map, dated and published with it). The
-- next run reuses the values of records whose source_hash (a hash of the staged values they come
-- from) is unchanged instead of normalising, fingerprinting and keying every record again
-- (include/identity/incremental.py). Erasure deletes a person's rows by source_system/source_id.
-- An id_<type> column is added per identifier type a run links on.
CREATE TABLE IF NOT EXISTS identity_linkage_records (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR, source_hash VARCHAR, record_hash VARCHAR,
    first_name VARCHAR, last_name VARCHAR, email VARCHAR, phone VARCHAR, postcode VARCHAR,
    address VARCHAR, region VARCHAR, dob VARCHAR, device_id VARCHAR
);

CREATE TABLE IF NOT EXISTS customers (
    as_of_date DATE, customer_key VARCHAR, source_records BIGINT,
    source_systems VARCHAR, email VARCHAR, phone VARCHAR, postcode VARCHAR,
    region VARCHAR, first_seen_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS customer_features (
    as_of_date DATE, customer_key VARCHAR,
    recency_days DOUBLE, frequency DOUBLE, monetary DOUBLE, avg_order_value DOUBLE,
    orders_lifetime DOUBLE, revenue_lifetime DOUBLE, tenure_days DOUBLE,
    discount_share DOUBLE, return_rate DOUBLE, support_contacts DOUBLE,
    cost_to_serve DOUBLE, usage_sessions DOUBLE, email_open_rate DOUBLE,
    email_click_rate DOUBLE, preferred_channel VARCHAR, plan_tier VARCHAR,
    region VARCHAR, discount_depth DOUBLE, support_per_order DOUBLE, cost_per_contact DOUBLE,
    sessions_per_active_month DOUBLE, email_open_rate_active DOUBLE, email_click_per_open DOUBLE,
    purchase_days DOUBLE, repeat_buyer DOUBLE, cadence_days DOUBLE, lifecycle_state VARCHAR
);

-- The fit tables (segment_customers; immutable once written): fit_segment is the fit-local segment
-- (1 = highest mean 12-month revenue). Their segment_id, segment_name, name_rule, value_standing,
-- standing and match_distance columns are no longer written (older warehouses and hand-built rows
-- keep them): names and stable ids are segment_labels', by (as_of_date, fit_segment).
CREATE TABLE IF NOT EXISTS segment_assignments (
    as_of_date DATE, customer_key VARCHAR, segment_id BIGINT,
    segment_name VARCHAR, model_run_id VARCHAR, fit_segment BIGINT
);

CREATE TABLE IF NOT EXISTS segment_profiles (
    as_of_date DATE, segment_id BIGINT, segment_name VARCHAR, name_rule VARCHAR,
    customers BIGINT, customer_share DOUBLE, jaccard DOUBLE, match_distance DOUBLE,
    recency_days DOUBLE, frequency DOUBLE, monetary DOUBLE, avg_order_value DOUBLE,
    tenure_days DOUBLE, discount_share DOUBLE, return_rate DOUBLE,
    support_contacts DOUBLE, cost_to_serve DOUBLE, usage_sessions DOUBLE,
    email_open_rate DOUBLE, email_click_rate DOUBLE, model_run_id VARCHAR,
    value_standing VARCHAR, standing VARCHAR, fit_segment BIGINT
);

CREATE TABLE IF NOT EXISTS customer_segments (
    as_of_date DATE, customer_key VARCHAR, segment_id BIGINT,
    segment_name VARCHAR, model_run_id VARCHAR,
    rfm_r BIGINT, rfm_f BIGINT, rfm_m BIGINT, rfm_segment VARCHAR,
    raw_segment_id BIGINT, pending_segment_id BIGINT, pending_runs BIGINT
);

CREATE TABLE IF NOT EXISTS customer_rfm (
    as_of_date DATE, customer_key VARCHAR, rfm_r BIGINT, rfm_f BIGINT,
    rfm_m BIGINT, rfm_segment VARCHAR
);

CREATE TABLE IF NOT EXISTS segment_centroids (
    as_of_date DATE, segment_id BIGINT, feature VARCHAR, z_value DOUBLE, fit_segment BIGINT
);

CREATE TABLE IF NOT EXISTS segmentation_runs (
    as_of_date DATE, model_run_id VARCHAR, algorithm VARCHAR, k BIGINT,
    silhouette DOUBLE, davies_bouldin DOUBLE, customers BIGINT, published BOOLEAN,
    min_jaccard DOUBLE, bootstrap_ari DOUBLE, gate_passed BOOLEAN, gate_reason VARCHAR,
    archetype_ari DOUBLE, features_unavailable VARCHAR
);

CREATE TABLE IF NOT EXISTS support_channel_costs (
    as_of_date DATE, channel VARCHAR, cost_per_contact DOUBLE
);

CREATE TABLE IF NOT EXISTS clv_summary (
    as_of_date DATE, period VARCHAR, customer_key VARCHAR, frequency DOUBLE,
    recency DOUBLE, t DOUBLE, monetary_value DOUBLE, holdout_purchases DOUBLE, holdout_value DOUBLE
);

CREATE TABLE IF NOT EXISTS customer_clv (
    as_of_date DATE, customer_key VARCHAR, p_alive DOUBLE,
    expected_purchases_90d DOUBLE, expected_purchases_365d DOUBLE,
    expected_order_value DOUBLE, clv_90d DOUBLE, clv_365d DOUBLE,
    clv_365d_low DOUBLE, clv_365d_high DOUBLE, model_run_id VARCHAR, clv_model VARCHAR
);

CREATE TABLE IF NOT EXISTS segment_clv_check (
    as_of_date DATE, segment_id BIGINT, segment_name VARCHAR, customers BIGINT,
    value_rank BIGINT, clv_rank BIGINT, mean_clv_365d DOUBLE, total_clv_365d DOUBLE,
    mean_clv_365d_low DOUBLE, mean_clv_365d_high DOUBLE, mean_p_alive DOUBLE,
    flag BOOLEAN, reason VARCHAR, name_before VARCHAR, alive_share DOUBLE
);

CREATE TABLE IF NOT EXISTS segment_transitions (
    from_date DATE, to_date DATE, from_segment_id BIGINT, to_segment_id BIGINT,
    from_segment VARCHAR, to_segment VARCHAR, customers BIGINT, rate DOUBLE, clv_sum DOUBLE
);

CREATE TABLE IF NOT EXISTS customer_economics (
    as_of_date DATE, customer_key VARCHAR, segment_id BIGINT, segment_name VARCHAR,
    orders BIGINT, revenue DOUBLE, discount_spend DOUBLE, gross_margin DOUBLE,
    support_cost DOUBLE, servicing_cost DOUBLE, cost_to_serve DOUBLE, profit DOUBLE,
    p_alive DOUBLE, clv_365d DOUBLE
);

CREATE TABLE IF NOT EXISTS segment_economics (
    as_of_date DATE, segment_id BIGINT, segment_name VARCHAR, customers BIGINT,
    customer_share DOUBLE, revenue DOUBLE, gross_margin DOUBLE, discount_spend DOUBLE,
    support_cost DOUBLE, servicing_cost DOUBLE, cost_to_serve DOUBLE, profit DOUBLE,
    profit_per_customer DOUBLE, profit_share DOUBLE, revenue_share DOUBLE,
    mean_clv_365d DOUBLE, total_clv_365d DOUBLE, previous_date DATE,
    previous_customers BIGINT, label_kept_customers BIGINT, label_stability DOUBLE,
    cost_known BOOLEAN, alive_share DOUBLE, retention_base BIGINT, repeat_retention DOUBLE,
    currency_code VARCHAR, currency_symbol VARCHAR, gross_margin_rate DOUBLE, gross_margin_assumed BOOLEAN
);

CREATE TABLE IF NOT EXISTS profit_concentration (
    as_of_date DATE, customer_share DOUBLE, profit_share DOUBLE
);

CREATE TABLE IF NOT EXISTS customer_priority (
    as_of_date DATE, customer_key VARCHAR, segment_id BIGINT, segment_name VARCHAR,
    value_tier VARCHAR, churn_risk DOUBLE, risk_band VARCHAR, priority VARCHAR,
    priority_rank BIGINT, action VARCHAR,
    lifecycle_state VARCHAR, action_claim VARCHAR, playbook_rule VARCHAR
);

-- CRM pushes. crm_push_state: one row per (target, customer): the checksum and
-- label date the target last acknowledged, how many deliveries it acknowledged.
CREATE TABLE IF NOT EXISTS crm_push_state (
    target VARCHAR, customer_key VARCHAR, checksum VARCHAR, as_of_date DATE,
    acknowledged_at TIMESTAMP, record_key VARCHAR, deliveries BIGINT, ack_id VARCHAR,
    -- Added for issue #29: one row per (target, matched_by, record_id), the target's own record (a HubSpot
    -- contact id, a Salesforce Id, or the customer key), with the segment it was last sent (NULL: a clear),
    -- erasure_id marks the record of an erased person until the target acknowledged its clear.
    record_id VARCHAR, matched_by VARCHAR, segment_id BIGINT, segment_name VARCHAR, erasure_id VARCHAR
);

-- One row per (target, idempotency_key); as_of_date is the run's date, label_date the labels'.
CREATE TABLE IF NOT EXISTS crm_push_log (
    target VARCHAR, run_id VARCHAR, as_of_date DATE, batch BIGINT, idempotency_key VARCHAR,
    customers BIGINT, acknowledged BIGINT, failed BIGINT, status VARCHAR, response_code BIGINT,
    attempts BIGINT, detail VARCHAR, logged_at TIMESTAMP, label_date DATE,
    -- Acknowledged records of the batch by kind of change (a rename is not a move), and records created.
    new_records BIGINT, moved BIGINT, renamed BIGINT, updated BIGINT, merged BIGINT, cleared BIGINT,
    erased BIGINT, created BIGINT
);

-- One row per (target, record_key); as_of_date is the labels' date.
CREATE TABLE IF NOT EXISTS crm_outbox (
    target VARCHAR, as_of_date DATE, batch_key VARCHAR, customer_key VARCHAR, payload VARCHAR,
    checksum VARCHAR, created_at TIMESTAMP, record_key VARCHAR, record_id VARCHAR
);

-- The changed set of the push in progress (scratch: emptied when the push commits).
CREATE TABLE IF NOT EXISTS crm_push_pending (
    target VARCHAR, label_date DATE, customer_key VARCHAR, segment_id BIGINT, segment_name VARCHAR,
    clv_tier VARCHAR, priority VARCHAR, segment_action VARCHAR, checksum VARCHAR, deliveries_acked BIGINT,
    record_key VARCHAR, holdout BOOLEAN, record_id VARCHAR, matched_by VARCHAR, change VARCHAR,
    erasure_id VARCHAR
);

-- Extract and loading (issue #13). field_issues: an invalid optional value
-- (nulled in staging; the row is kept). stg_identity_identifiers: the id_*
-- columns of raw_identity_records, one row per non-empty value of a staged
-- record. load_manifest: what `python -m include.load` loaded, with the
-- currency and time zone the mapping declared for it.
CREATE TABLE IF NOT EXISTS field_issues (
    as_of_date DATE, source_table VARCHAR, source_key VARCHAR, column_name VARCHAR,
    reason VARCHAR, detail VARCHAR
);

CREATE TABLE IF NOT EXISTS stg_identity_identifiers (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR, id_type VARCHAR, id_value VARCHAR
);

CREATE TABLE IF NOT EXISTS load_manifest (
    table_name VARCHAR, source VARCHAR, rows_loaded BIGINT, currency VARCHAR, timezone VARCHAR,
    date_format VARCHAR, decimal_separator VARCHAR, mapping_file VARCHAR, loaded_at TIMESTAMP,
    -- Added later (issue #27): where every input row went. rows_in = rows_loaded + rows_as_returns +
    -- rows_aggregated + rows_quarantined + rows_guest + rows_erased; guest_amount is the money of the guests.
    rows_in BIGINT, rows_aggregated BIGINT, rows_quarantined BIGINT, rows_guest BIGINT, guest_amount DOUBLE,
    derived_from VARCHAR, rows_as_returns BIGINT, rows_erased BIGINT
);

-- One row per identity run: how records were linked, and whether the run was
-- degraded (Splink untrainable and several source systems, or the truth-free
-- quality estimate below the bar) and why. Read by the report. mode: full |
-- incremental (Splink) or the method without a model; base_as_of_date: the run an
-- incremental run built on; estimated_*: the truth-free estimate
-- (include/identity/quality.py) over estimated_scope.
CREATE TABLE IF NOT EXISTS identity_runs (
    as_of_date DATE, method VARCHAR, degraded BOOLEAN, reason VARCHAR, records BIGINT,
    customers BIGINT, linkage_columns VARCHAR, model_trained BOOLEAN,
    mode VARCHAR, mode_reason VARCHAR, base_as_of_date DATE, records_relinked BIGINT,
    model_id VARCHAR, model_trained_for DATE,
    estimated_precision DOUBLE, estimated_recall DOUBLE, estimated_f1 DOUBLE, estimated_scope VARCHAR,
    estimated_links_near_threshold_share DOUBLE, contradictory_id_cluster_share DOUBLE,
    equal_id_pairs_apart_share DOUBLE, largest_cluster BIGINT, quality_below_bar VARCHAR
);

-- Customers merged or split by an identity run, against the run it built on
-- (include/identity/incremental.py: identity_changes). change: 'merge' (customer_key
-- disappeared, its records now under survivor_key) | 'split' (records left
-- customer_key for survivor_key). Read by the CRM stage to mirror merges.
CREATE TABLE IF NOT EXISTS identity_changes (
    as_of_date DATE, change VARCHAR, customer_key VARCHAR, survivor_key VARCHAR, records BIGINT
);

-- Legacy labels beside the behavioural segments (issue #19, item 5).
-- stg_legacy_labels: validated raw_legacy_labels (the business's own tiers or
-- personas per identity record). customer_legacy_labels: one label per
-- customer and scheme after resolving the customer's records (rule in
-- include/sql/comparison.sql; `rule` says which step decided, `conflict` that
-- the records disagreed). legacy_crosstab: customers per legacy label x
-- published segment, with the row share. scheme_variance: per scheme
-- (legacy, behavioural, rfm), measure (profit, clv_365d) and basis (amount,
-- rank) the share of the customers' variance between the scheme's groups
-- (eta squared) and its size-adjusted estimate (omega squared). legacy_label_summary: coverage and
-- conflicts per scheme.
CREATE TABLE IF NOT EXISTS stg_legacy_labels (
    as_of_date DATE, source_system VARCHAR, source_id VARCHAR, scheme VARCHAR, label VARCHAR, valid_from DATE
);

CREATE TABLE IF NOT EXISTS customer_legacy_labels (
    as_of_date DATE, customer_key VARCHAR, scheme VARCHAR, label VARCHAR, valid_from DATE,
    records BIGINT, distinct_labels BIGINT, conflict BOOLEAN, rule VARCHAR
);

CREATE TABLE IF NOT EXISTS legacy_crosstab (
    as_of_date DATE, scheme VARCHAR, legacy_label VARCHAR, segment_id BIGINT, segment_name VARCHAR,
    customers BIGINT, row_share DOUBLE
);

CREATE TABLE IF NOT EXISTS scheme_variance (
    as_of_date DATE, scheme VARCHAR, scheme_kind VARCHAR, measure VARCHAR, basis VARCHAR, groups BIGINT, customers BIGINT,
    ss_between DOUBLE, ss_total DOUBLE, eta_squared DOUBLE, omega_squared DOUBLE
);

CREATE TABLE IF NOT EXISTS legacy_label_summary (
    as_of_date DATE, scheme VARCHAR, labels BIGINT, customers_labelled BIGINT, customers_total BIGINT,
    coverage DOUBLE, conflicts BIGINT, records_staged BIGINT
);

-- Experiment (include/experiment): the holdout of every published customer per
-- date (stable by experiment name and customer key; holdouts get no playbook
-- action), the policy in force each run, and treated-vs-holdout lift per segment.
CREATE TABLE IF NOT EXISTS customer_holdout (
    as_of_date DATE, experiment_name VARCHAR, customer_key VARCHAR, segment_id BIGINT,
    segment_name VARCHAR, holdout BOOLEAN, holdout_draw DOUBLE, action VARCHAR, policy_hash VARCHAR
);

CREATE TABLE IF NOT EXISTS policy_runs (
    as_of_date DATE, experiment_name VARCHAR, policy_hash VARCHAR, playbook_path VARCHAR,
    holdout_share DOUBLE, policy_start DATE, actions VARCHAR, customers BIGINT, holdout_customers BIGINT,
    recorded_at TIMESTAMP,
    -- Added later: the as-of date of the (backfill) run that last rewrote this later date's experiment record
    -- (NULL: written by its own run) and what changed.
    rewritten_by DATE, rewrite_detail VARCHAR
);

CREATE TABLE IF NOT EXISTS segment_lift (
    as_of_date DATE, experiment_name VARCHAR, policy_hash VARCHAR, policy_start DATE, window_start DATE,
    segment_id BIGINT, segment_name VARCHAR, metric VARCHAR, n_treated BIGINT, n_holdout BIGINT,
    treated_mean DOUBLE, holdout_mean DOUBLE, lift DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
    relative_lift DOUBLE, relative_ci_low DOUBLE, relative_ci_high DOUBLE, mde DOUBLE,
    -- Added later (ensure_schema adds them to an older warehouse; its rows read NULL): the interval that
    -- holds for all of the run's segments of the outcome at once (Bonferroni over family_size of them).
    simultaneous_low DOUBLE, simultaneous_high DOUBLE, family_size BIGINT
);

-- Labels (include/labels, task label_segments: the one owner of published segment ids and names).
-- segment_labels: one row per (date, fit segment): its label group (fit segments that nothing named
-- tells apart share one), stable segment_id, name, the rule behind it, value standing, standing (JSON,
-- what the playbook matches on), what the backtest said about its claims, size and revenue per customer.
-- label_runs: one row per date: the quality gate (the fit's bootstrap stability and the labels'
-- validity, saying which failed), merges, the claims withheld after this run's backtest (JSON
-- {claim: reason}; action claims too, which the playbook then skips) and the CLV check's status.
CREATE TABLE IF NOT EXISTS segment_labels (
    as_of_date DATE, fit_segment BIGINT, label_group BIGINT, segment_id BIGINT, segment_name VARCHAR,
    name_rule VARCHAR, value_standing VARCHAR, standing VARCHAR, backtest_verdict VARCHAR, customers BIGINT,
    customer_share DOUBLE, revenue_per_customer DOUBLE, match_distance DOUBLE, model_run_id VARCHAR
);

CREATE TABLE IF NOT EXISTS label_runs (
    as_of_date DATE, model_run_id VARCHAR, labels BIGINT, stability_passed BOOLEAN, validity_passed BOOLEAN,
    gate_passed BOOLEAN, gate_reason VARCHAR, merged VARCHAR, claims_withheld VARCHAR, clv_check VARCHAR,
    backtest_date DATE
);

-- Backtest (include/backtest, task backtest_claims): the run's published logic run as of
-- backtest_date = as_of_date - horizon_days on the run's own staged data, each claim checked against
-- what its customers did in (backtest_date, as_of_date]. One row per claim and segment (segment_name:
-- the segment or action tier the claim is about, at backtest_date; NULL when run-wide). verdict:
-- 'held' | 'failed' | 'not checked' (detail says why). backtest_features: the features it used
-- (the run's as_of_date, the backtest_date they describe), never written into customer_features.
CREATE TABLE IF NOT EXISTS claims_backtest (
    as_of_date DATE, backtest_date DATE, horizon_days INTEGER, claim_kind VARCHAR, claim VARCHAR,
    segment_name VARCHAR, customers BIGINT, metric VARCHAR, realised DOUBLE, bar DOUBLE, verdict VARCHAR,
    detail VARCHAR, customer_share DOUBLE, revenue_per_customer DOUBLE, revenue_share DOUBLE,
    came_back_share DOUBLE, repeat_share DOUBLE
);

CREATE TABLE IF NOT EXISTS backtest_features (
    as_of_date DATE, backtest_date DATE, customer_key VARCHAR,
    recency_days DOUBLE, frequency DOUBLE, monetary DOUBLE, avg_order_value DOUBLE,
    orders_lifetime DOUBLE, revenue_lifetime DOUBLE, tenure_days DOUBLE,
    discount_share DOUBLE, return_rate DOUBLE, support_contacts DOUBLE,
    cost_to_serve DOUBLE, usage_sessions DOUBLE, email_open_rate DOUBLE,
    email_click_rate DOUBLE, preferred_channel VARCHAR, plan_tier VARCHAR,
    region VARCHAR, discount_depth DOUBLE, support_per_order DOUBLE, cost_per_contact DOUBLE,
    sessions_per_active_month DOUBLE, email_open_rate_active DOUBLE, email_click_per_open DOUBLE,
    purchase_days DOUBLE, repeat_buyer DOUBLE, cadence_days DOUBLE, lifecycle_state VARCHAR
);

-- Returns, flags and row accounting (issues #27, #31; include/extract, include/load).
-- stg_returns: validated raw_returns (a cancellation or refund per row, amount > 0) and where
-- its money went (rule in include/sql/validate_money.sql): matched to the order it names, to
-- the customer record's earlier purchases, or unattributed (never subtracted). extract_flags:
-- staged values kept but flagged (far above the shop's typical amount) or adjusted (a
-- returned_amount above its order's amount), with the rule and the value. return_attribution:
-- per date, the returned money by destination and the records left with no net spend.
CREATE TABLE IF NOT EXISTS stg_returns (
    as_of_date DATE, return_id VARCHAR, source_system VARCHAR, source_id VARCHAR, return_ts TIMESTAMP,
    amount DOUBLE, order_id VARCHAR, matched_to_order DOUBLE, matched_to_prior DOUBLE, unattributed DOUBLE
);

CREATE TABLE IF NOT EXISTS extract_flags (
    as_of_date DATE, source_table VARCHAR, source_key VARCHAR, column_name VARCHAR, rule VARCHAR, detail VARCHAR
);

CREATE TABLE IF NOT EXISTS return_attribution (
    as_of_date DATE, returns BIGINT, returned_amount DOUBLE, matched_to_order DOUBLE, matched_to_prior DOUBLE,
    unattributed_amount DOUBLE, returns_unattributed BIGINT, records_with_returns BIGINT,
    records_zero_net_spend BIGINT, order_returned_amount DOUBLE
);

-- Input rows the loader set aside with a reason (an invoice line whose value is not a number,
-- a line without an order key); replaced for a table on each load of it.
CREATE TABLE IF NOT EXISTS load_quarantine (
    table_name VARCHAR, source VARCHAR, source_key VARCHAR, reason VARCHAR, detail VARCHAR, loaded_at TIMESTAMP
);

-- CLV runs and their check (include/clv/fit.py; owner: fit_clv). clv_runs: one row per date, written
-- every run. status: 'champion' (the figures come from a fit that is the champion: this run's fit passed
-- its check, or the run scored with the registry's champion), 'fitted' (this run's fit failed its check:
-- customer_clv is written but not presented as true), 'unavailable' (no purchase model fits: no
-- customer_clv rows for the date; every reader says "CLV not available: <reason>"). check_passed and
-- reason say whether and why the figures fail their check (holdout error, ranking on the holdout).
-- fitted_as_of: the as-of date of the registry's champion the run scored with (NULL: fitted this run).
CREATE TABLE IF NOT EXISTS clv_runs (
    as_of_date DATE, status VARCHAR, clv_model VARCHAR, reason VARCHAR, holdout_error_pct DOUBLE,
    gross_margin DOUBLE, gross_margin_assumed BOOLEAN, check_passed BOOLEAN, holdout_mae DOUBLE,
    normalised_gini DOUBLE, candidates VARCHAR, customers BIGINT, fitted_as_of DATE, model_run_id VARCHAR
);

-- CLV calibration on the run's own holdout: the calibration fit's predictions for the holdout days
-- against what the customers did in them. row_kind 'decile': customers by decile of predicted holdout
-- revenue (1 = highest), predicted vs realised purchases and revenue; row_kind 'summary': one metric
-- per row (normalised Gini, aggregate errors, the top decile's share) with its bar and verdict.
CREATE TABLE IF NOT EXISTS clv_backtest (
    as_of_date DATE, calibration_end DATE, horizon_days BIGINT, clv_model VARCHAR, row_kind VARCHAR,
    decile BIGINT, metric VARCHAR, customers BIGINT, predicted_purchases DOUBLE, realised_purchases DOUBLE,
    predicted_revenue DOUBLE, realised_revenue DOUBLE, value DOUBLE, bar DOUBLE, verdict VARCHAR,
    detail VARCHAR
);

-- CRM pushes (issue #29). One row per (target, run_id, as_of_date): what the push matched and sent.
-- customers_without_record: labelled customers with no record in that CRM (counted, never created),
-- records_without_labels: the CRM's records whose customer is not segmented.
CREATE TABLE IF NOT EXISTS crm_push_runs (
    target VARCHAR, run_id VARCHAR, as_of_date DATE, label_date DATE, matched_by VARCHAR,
    customers BIGINT, records BIGINT, customers_without_record BIGINT, records_without_labels BIGINT,
    ambiguous_records BIGINT, newer_delivered BIGINT, changed BIGINT, new_records BIGINT, moved BIGINT,
    renamed BIGINT, updated BIGINT, merged BIGINT, cleared BIGINT, erased BIGINT, acknowledged BIGINT,
    failed BIGINT, not_found BIGINT, created BIGINT, logged_at TIMESTAMP
);

-- Erasure (include/erasure). erasure_log: one audit row per erasure, counts only (no erased value).
-- erasure_list: what load and extract keep out for good, as md5('erasure|' || source_system || '|' ||
-- source_id) of every source record of an erased person (no id in the clear).
CREATE TABLE IF NOT EXISTS erasure_log (
    erasure_id VARCHAR, requested_at TIMESTAMP, completed_at TIMESTAMP, requested_by VARCHAR,
    identifiers_given BIGINT, source_records BIGINT, customer_keys BIGINT, tables_changed BIGINT,
    rows_deleted BIGINT, rows_by_table VARCHAR, crm_records_to_clear BIGINT, crm_records_cleared BIGINT,
    status VARCHAR
);

CREATE TABLE IF NOT EXISTS erasure_list (
    erasure_id VARCHAR, id_hash VARCHAR
);
