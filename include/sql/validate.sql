{#-
Validation of one raw table into its staging table, quarantine and field issues
(a Jinja template; include/extract/validate.py renders it per raw table and runs
the "-- name:" statements it yields).

Context (built by include.extract.validate.validation_context):
  dialect         'duckdb' or 'snowflake'
  date_order      'ISO', 'DMY' or 'MDY'
  raw, staged     the raw table and its staging table
  key             the columns of the table's key
  event_column    the column that dates a row
  references_identity  rows must belong to a staged identity record
  columns         one entry per contract column: name, kind ('text', 'ts', 'date', 'num'),
                  sql_type, required, nonnegative, present, native (a warehouse type that
                  already holds the kind: used as it is), float_native, data_type
  raw_columns     the columns the raw table has (sorted)
  has_loaded_at, loaded_at_native, loaded_at_type
  parsed          date/time columns parsed from text (plus loaded_at when it is text)
  extra_ids       the id_* columns of raw_identity_records (identity only)
  identifiers_table  whether the table's id_* columns feed stg_identity_identifiers

Bind parameters: :as_of_date (DATE) and :cutoff_ts (exclusive upper bound, the start of
the next day).

What the statements do:
1. type every column: dates and times (ISO 8601 with an optional UTC offset converted to
   UTC, YYYYMMDD, the configured day/month order) through string layers, numbers with
   TRY_CAST where only finite values count; natively typed columns are used as they are;
2. keep the rows in scope for the run: loaded on or before the as-of date when the table
   has loaded_at, else with an event time on or before it;
3. give every in-scope row at most one reason, the first failing rule on a required
   column; an invalid optional value is nulled and recorded in field_issues instead;
4. flag duplicate keys (the first copy by loaded_at, then raw values, is kept);
5. write clean rows to staging, the others to quarantine with the offending value.
-#}
{% import 'validate_parse.sql' as p with context %}
{% set chk = '_chk_' ~ raw %}
{% set ranked = '_dup_' ~ raw %}
{% set required = columns | selectattr('required') | selectattr('present') | list %}
{% set issue_columns = columns | rejectattr('required') | selectattr('present') | rejectattr('kind', 'equalto', 'text') | list %}
{% set native_names = columns | selectattr('native') | map(attribute='name') | list %}
{% set text_names = columns | selectattr('kind', 'equalto', 'text') | map(attribute='name') | list %}

{#- The raw value of `name` as text (a native value is cast only where text is shown).
    A text column's value is its raw text: the check table keeps it once. -#}
{% macro as_text(name, prefix='t.') -%}
{%- if name in text_names -%}{{ prefix }}{{ name }}
{%- elif name in native_names -%}CAST({{ prefix }}{{ name }}__raw AS VARCHAR)
{%- else -%}{{ prefix }}{{ name }}__raw
{%- endif -%}
{%- endmacro %}

{#- The row's source key as text, built only for the rows that need it (quarantine, field issues). -#}
{% macro key_text() -%}
{%- for k in key %}{% if not loop.first %} || '|' || {% endif %}COALESCE({{ as_text(k, '') }}, 'NULL'){% endfor -%}
{%- endmacro %}

{#- The columns every layer carries over from the one before. -#}
{% macro carry() -%}
{%- for c in columns %}{% if not loop.first %}, {% endif %}{{ c.name }}__raw{% endfor -%}
{%- if has_loaded_at %}, loaded_at__raw{% endif -%}
{%- for name in extra_ids %}, {{ name }}{% endfor -%}
{%- endmacro %}

{% macro failure(name) -%}
t.{{ name }}__raw IS NOT NULL AND t.{{ name }} IS NULL
{%- endmacro %}

{#- One rule as a WHEN of the reason (mode 'reason') or of the detail naming the value. -#}
{% macro rule(mode, condition, reason, column, detail_condition=None, detail_suffix=None) -%}
{%- if mode == 'reason' %} WHEN {{ condition }} THEN '{{ reason }}'
{%- else %} WHEN {{ detail_condition or condition }} THEN '{{ column }}=' || COALESCE({{ as_text(column) }}, 'NULL')
{%- if detail_suffix %} || {{ detail_suffix }}{% endif %}
{%- endif -%}
{%- endmacro %}

{#- The rules of a row, first failing wins: only required columns quarantine a row. -#}
{% macro rules(mode) -%}
{%- for c in required %}{{ rule(mode, 't.' ~ c.name ~ '__raw IS NULL', 'missing_required_value', c.name) }}{% endfor -%}
{%- for c in required if c.kind in ('ts', 'date') %}{{ rule(mode, failure(c.name), 'unparsable_date', c.name) }}{% endfor -%}
{%- for c in required if c.kind == 'num' %}{{ rule(mode, failure(c.name), 'non_numeric_value', c.name) }}{% endfor -%}
{%- for c in required if c.nonnegative %}{{ rule(mode, 't.' ~ c.name ~ ' < 0', 'negative_value', c.name) }}{% endfor -%}
{#- Implausible values (issue #31): beyond the configured bound, before the business could exist. -#}
{%- for c in required if c.kind == 'num' %}{{ rule(mode, 't.' ~ c.name ~ ' > :max_amount', 'value_above_bound', c.name) }}{% endfor -%}
{%- for c in required if c.kind in ('ts', 'date') %}{{ rule(mode, 't.' ~ c.name ~ ' < :business_start_ts', 'date_before_business_start', c.name) }}{% endfor -%}
{%- if has_loaded_at %}{{ rule(mode, 't._loaded_at IS NOT NULL AND t.' ~ event_column ~ ' > t._loaded_at', 'future_date', event_column) }}{% endif -%}
{%- set created = 'ids.created_at' if mode == 'reason' else 't._created_at' -%}
{%- if checks_creation %}{{ rule(mode, created ~ ' IS NOT NULL AND t.' ~ event_column ~ ' < ' ~ p.add_minutes(created, '-CAST(:created_grace_minutes AS INTEGER)'),
    'before_customer_created', event_column, "t._reason = 'before_customer_created'", "', customer created_at=' || CAST(t._created_at AS VARCHAR)") }}{% endif -%}
{%- if references_identity %}{{ rule(mode, 'ids.source_id IS NULL', 'unknown_customer_id', 'source_id', "t._reason = 'unknown_customer_id'") }}{% endif -%}
{%- endmacro %}

{#- The columns of the check table, in order. -#}
{% macro check_columns() -%}
{%- for c in columns -%}
{{ c.name }}, {% if c in issue_columns %}{{ c.name }}__issue, {% endif %}{% if c.kind != 'text' %}{{ c.name }}__raw, {% endif %}
{%- endfor -%}
{%- for name in extra_ids %}{{ name }}, {% endfor -%}
_loaded_at, _reason, _detail, _dup
{%- endmacro %}

-- name: create
CREATE TEMPORARY TABLE {{ chk }} AS
WITH l0 AS (
    {#- Layer 0: trimmed text of every column; later layers add parsed values. #}
    SELECT
{%- for c in columns %}
        {% if not loop.first %}, {% endif %}{% if c.native %}{{ c.name }}{% elif c.present %}{{ p.text(c.name, c.data_type) }}{% else %}CAST(NULL AS VARCHAR){% endif %} AS {{ c.name }}__raw
{%- endfor %}
{%- if has_loaded_at %}
        , {% if loaded_at_native %}loaded_at{% else %}{{ p.text('loaded_at', loaded_at_type) }}{% endif %} AS loaded_at__raw
{%- endif %}
{%- for name in extra_ids %}
        , {{ p.text(name, extra_id_types.get(name)) }} AS {{ name }}
{%- endfor %}
    FROM (SELECT {{ raw_columns | join(', ') }} FROM {{ raw }}) r
),
{%- for step in range(4) %}
l{{ step + 1 }} AS (
    SELECT {{ carry() }}{% for name in parsed %}, {{ p.time_layer(name, step, date_order) }}{% endfor %}
    FROM l{{ step }}
),
{%- endfor %}
l5 AS (
    SELECT {{ carry() }}{% for name in parsed %}, {{ p.local_time(name) }}{% endfor %}
    FROM l4
),
typed AS (
    SELECT {{ carry() }},
{%- for c in columns %}
        {% if not c.present %}CAST(NULL AS {{ c.sql_type }})
        {%- elif c.native and c.kind == 'num' and c.float_native %}CASE WHEN {{ c.name }}__raw - {{ c.name }}__raw = 0 THEN CAST({{ c.name }}__raw AS DOUBLE) END
        {%- elif c.native %}CAST({{ c.name }}__raw AS {{ c.sql_type }})
        {%- elif c.kind == 'text' %}{{ c.name }}__raw
        {%- elif c.kind == 'ts' %}{{ p.utc_time(c.name) }}
        {#- A calendar date stays the date as written, whatever its offset. #}
        {%- elif c.kind == 'date' %}CAST({{ c.name }}__local AS DATE)
        {%- else %}{{ p.finite_number(c.name ~ '__raw') }}
        {%- endif %} AS {{ c.name }},
{%- endfor %}
        {% if loaded_at_native %}CAST(loaded_at__raw AS TIMESTAMP){% elif has_loaded_at %}{{ p.utc_time('loaded_at') }}{% else %}CAST(NULL AS TIMESTAMP){% endif %} AS _loaded_at
    FROM l5
),
reasoned AS (
    SELECT t.*,{% if checks_creation %} ids.created_at AS _created_at,{% endif %}
        CASE{{ rules('reason') }} ELSE NULL END AS _reason
{%- for c in issue_columns %},
        {#- An invalid optional value is nulled and recorded in field_issues; the row is kept. #}
        CASE WHEN {{ failure(c.name) }} THEN '{{ 'non_numeric_value' if c.kind == 'num' else 'unparsable_date' }}'
            {%- if c.nonnegative %} WHEN t.{{ c.name }} < 0 THEN 'negative_value'{% endif %}
            {%- if c.kind == 'num' %} WHEN t.{{ c.name }} > :max_amount THEN 'value_above_bound'{% endif %} END AS {{ c.name }}__issue
{%- endfor %}
    FROM typed t
{%- if checks_creation %}
    LEFT JOIN (SELECT source_system, source_id, MIN(created_at) AS created_at FROM stg_identity_records
               WHERE as_of_date = :as_of_date GROUP BY source_system, source_id) ids
        ON ids.source_system = t.source_system AND ids.source_id = t.source_id
{%- elif references_identity %}
    LEFT JOIN (SELECT DISTINCT source_system, source_id FROM stg_identity_records
               WHERE as_of_date = :as_of_date) ids
        ON ids.source_system = t.source_system AND ids.source_id = t.source_id
{%- endif %}
    {#- Rows loaded after the as-of date (or, without loaded_at, whose event is after it) belong
        to later runs. A future-dated row that was already loaded is in scope (future_date). #}
{%- set in_time = '(t.' ~ event_column ~ ' IS NULL OR t.' ~ event_column ~ ' < :cutoff_ts)' %}
    WHERE {% if has_loaded_at %}(CASE WHEN t._loaded_at IS NOT NULL THEN t._loaded_at < :cutoff_ts ELSE {{ in_time }} END){% else %}{{ in_time }}{% endif %}
)
SELECT
{%- for c in columns %}
    {% if c in issue_columns %}CASE WHEN t.{{ c.name }}__issue IS NULL THEN t.{{ c.name }} END AS {{ c.name }}, t.{{ c.name }}__issue,
    {%- else %}t.{{ c.name }},{% endif %}
    {%- if c.kind != 'text' %} t.{{ c.name }}__raw,{% endif %}
{%- endfor %}
{%- for name in extra_ids %}
    t.{{ name }},
{%- endfor %}
    t._loaded_at, t._reason,
    {#- The detail repeats the first failing rule's test for the few failing rows only. #}
    CASE WHEN t._reason IS NOT NULL THEN CASE{{ rules('detail') }} END END AS _detail,
{%- if dialect == 'duckdb' %}
    {#- Set by dup_flag below: a second reference to `reasoned` here would make DuckDB materialise
        the whole CTE (every parsed column of every row) besides the check table it fills. #}
    0 AS _dup
FROM reasoned t;

-- name: dup_flag
{#- Duplicate keys among the clean rows. DuckDB groups by a 64-bit hash of the key instead of the
    key's strings (6.2M order ids at 480,000 customers): a hash shared by different keys only flags
    a few extra rows, which the exact ranking below keeps. #}
UPDATE {{ chk }} SET _dup = 1 WHERE _reason IS NULL AND HASH({{ key | join(', ') }}) IN (
    SELECT HASH({{ key | join(', ') }}) FROM {{ chk }} WHERE _reason IS NULL GROUP BY 1 HAVING COUNT(*) > 1);
{%- else %}
    CASE WHEN d._dup_key IS NOT NULL AND t._reason IS NULL THEN 1 ELSE 0 END AS _dup
FROM reasoned t
LEFT JOIN (
    SELECT {{ key | join(', ') }}, COUNT(*) AS _dup_key FROM reasoned WHERE _reason IS NULL
    GROUP BY {% for k in key %}{% if not loop.first %}, {% endif %}{{ loop.index }}{% endfor %} HAVING COUNT(*) > 1
) d ON {% for k in key %}{% if not loop.first %} AND {% endif %}d.{{ k }} = t.{{ k }}{% endfor %};
{%- endif %}

-- name: dup_drop
{# Duplicate keys are rare: the aggregate above flags them, and only the flagged rows are
   ranked (the first copy by loaded_at, then raw values, is kept), instead of sorting every
   row by key in a window. #}
DROP TABLE IF EXISTS {{ ranked }};

-- name: dup_rank
CREATE TEMPORARY TABLE {{ ranked }} AS SELECT {{ check_columns() }}, ROW_NUMBER() OVER (
    PARTITION BY {% for k in key %}{% if not loop.first %}, {% endif %}t.{{ k }}{% endfor %}
    ORDER BY t._loaded_at{% for c in columns %}, {{ as_text(c.name) }}{% endfor %}) AS _dup_rank
FROM {{ chk }} t WHERE t._dup = 1;

-- name: dup_delete
DELETE FROM {{ chk }} WHERE _dup = 1;

-- name: dup_insert
INSERT INTO {{ chk }} ({{ check_columns() }})
SELECT {% for name in check_columns().split(', ') %}{% if not loop.first %}, {% endif %}
{%- if name == '_reason' %}CASE WHEN _dup_rank > 1 THEN 'duplicate_key' ELSE _reason END
{%- elif name == '_detail' %}CASE WHEN _dup_rank > 1 THEN 'key=' || {{ key_text() }} ELSE _detail END
{%- else %}{{ name }}{% endif %}{% endfor %}
FROM {{ ranked }};

-- name: delete_staged
DELETE FROM {{ staged }} WHERE as_of_date = :as_of_date;

-- name: insert_staged
INSERT INTO {{ staged }} (as_of_date, {{ columns | map(attribute='name') | join(', ') }})
SELECT CAST(:as_of_date AS DATE), {{ columns | map(attribute='name') | join(', ') }} FROM {{ chk }} WHERE _reason IS NULL;

-- name: delete_quarantine
DELETE FROM quarantine WHERE as_of_date = :as_of_date AND source_table = '{{ raw }}';

-- name: insert_quarantine
INSERT INTO quarantine (as_of_date, source_table, source_key, reason, detail)
SELECT CAST(:as_of_date AS DATE), '{{ raw }}', {{ key_text() }}, _reason, _detail
FROM {{ chk }} WHERE _reason IS NOT NULL;

-- name: delete_field_issues
DELETE FROM field_issues WHERE as_of_date = :as_of_date AND source_table = '{{ raw }}';
{% if issue_columns %}

-- name: insert_field_issues
INSERT INTO field_issues (as_of_date, source_table, source_key, column_name, reason, detail)
{% for c in issue_columns -%}
{% if not loop.first %}UNION ALL
{% endif -%}
SELECT CAST(:as_of_date AS DATE), '{{ raw }}', {{ key_text() }}, '{{ c.name }}', {{ c.name }}__issue,
    '{{ c.name }}=' || {{ as_text(c.name, '') }} FROM {{ chk }} WHERE _reason IS NULL AND {{ c.name }}__issue IS NOT NULL
{% endfor -%};
{% endif %}

-- name: counts
{#- What the date's staging and quarantine hold after the writes, beside what the check table gave
    them: validate.py fails the stage when they differ (see STAGED_COUNT_CHECK there). #}
SELECT COUNT(*) AS in_scope, SUM(CASE WHEN _reason IS NULL THEN 1 ELSE 0 END) AS staged,
    (SELECT COUNT(*) FROM {{ raw }}) AS raw_total,
    (SELECT COUNT(*) FROM {{ staged }} WHERE as_of_date = :as_of_date) AS staged_written,
    (SELECT COUNT(*) FROM quarantine WHERE as_of_date = :as_of_date AND source_table = '{{ raw }}') AS quarantined_written
FROM {{ chk }};

-- name: drop
DROP TABLE IF EXISTS {{ chk }};
{% if identifiers_table %}

-- name: delete_identifiers
{# The id_* columns of staged identity records, one row per non-empty value. #}
DELETE FROM stg_identity_identifiers WHERE as_of_date = :as_of_date;
{% if extra_ids %}

-- name: insert_identifiers
INSERT INTO stg_identity_identifiers (as_of_date, source_system, source_id, id_type, id_value)
{% for name in extra_ids -%}
{% if not loop.first %}UNION ALL
{% endif -%}
SELECT CAST(:as_of_date AS DATE), source_system, source_id, '{{ name[3:] }}', {{ name }} FROM {{ chk }}
WHERE _reason IS NULL AND {{ name }} IS NOT NULL
{% endfor -%};
{% endif %}
{% endif %}
