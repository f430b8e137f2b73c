{#-
Expressions that read raw text as typed values: Jinja macros imported by validate.sql.

The same text runs on DuckDB and Snowflake: string functions only (SUBSTR,
SPLIT_PART, LPAD...), so no session date-format or time-zone setting is ever
read. `dialect` ('duckdb' or 'snowflake') picks the few forms that differ.
-#}

{#- Trimmed text of `col`, NULL when blank. -#}
{% macro text(col, data_type=None) -%}
{%- set value = col if data_type in ('varchar', 'text') else 'CAST(' ~ col ~ ' AS VARCHAR)' -%}
{%- if dialect == 'duckdb' -%}
{#- DuckDB's TRIM strips Unicode space separators, so it decodes every value (a third of the
    stage's CPU at 480,000 customers); a value of ASCII characters (bytes = characters) that
    neither starts nor ends with a space has nothing to strip and skips it. -#}
CASE WHEN {{ value }} NOT LIKE ' %' AND {{ value }} NOT LIKE '% ' AND STRLEN({{ value }}) = LENGTH({{ value }})
    THEN NULLIF({{ value }}, '') ELSE NULLIF(TRIM({{ value }}), '') END
{%- else -%}
NULLIF(TRIM({{ value }}), '')
{%- endif -%}
{%- endmacro %}

{#- Text to TIMESTAMP, NULL when unparsable. The date guard makes the cast NULL-safe on
    fakesnow, whose TRY_CAST to TIMESTAMP raises on unparsable text; DuckDB's TRY_CAST does
    not need it (a second cast per value, 36M values at 480,000 customers). -#}
{% macro try_timestamp(expr) -%}
{%- if dialect == 'duckdb' -%}
TRY_CAST({{ expr }} AS TIMESTAMP)
{%- else -%}
CASE WHEN TRY_CAST(SUBSTR({{ expr }}, 1, 10) AS DATE) IS NOT NULL THEN TRY_CAST({{ expr }} AS TIMESTAMP) END
{%- endif -%}
{%- endmacro %}

{#- The one dialect difference of the parser: neither engine has the other's form
    (DuckDB has no DATEADD; Snowflake cannot multiply an interval). -#}
{% macro add_minutes(ts, minutes) -%}
{%- if dialect == 'snowflake' -%}
DATEADD(minute, {{ minutes }}, {{ ts }})
{%- else -%}
({{ ts }} + ({{ minutes }}) * INTERVAL '1 minute')
{%- endif -%}
{%- endmacro %}

{#- A finite DOUBLE from text, else NULL: NaN, inf and overflowing text (1e309) cast to a
    DOUBLE on both engines; x - x = 0 holds for finite values only. -#}
{% macro finite_number(raw) -%}
CASE WHEN TRY_CAST({{ raw }} AS DOUBLE) - TRY_CAST({{ raw }} AS DOUBLE) = 0 THEN TRY_CAST({{ raw }} AS DOUBLE) END
{%- endmacro %}

{#- One of the four successive SELECT layers that turn `<name>__raw` text into an ISO string
    (`<name>__iso`) and its UTC offset (`<name>__zone`); each layer may refer to the previous
    layer's columns. step 0: separator; 1: zone split; 2: date part; 3: ISO. -#}
{% macro time_layer(name, step, date_order) -%}
{%- set raw, s, loc, d, dn, fast = name ~ '__raw', name ~ '__s', name ~ '__loc', name ~ '__d', name ~ '__dn', name ~ '__fast' -%}
{%- if step == 0 -%}
{#- Fast path: plain 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS' or with a fraction of six digits (no
    room for an offset) skips the string surgery below, which then runs on NULLs; most warehouse
    exports look like this. (LIKE patterns: cheaper than SUBSTR, which counts characters.) -#}
{%- set plain -%}
({{ raw }} LIKE '____-__-__ ________' OR {{ raw }} LIKE '____-__-__' OR {{ raw }} LIKE '____-__-__ ________.______')
{%- endset -%}
CASE WHEN {{ plain }} THEN {{ raw }} END AS {{ fast }},
CASE WHEN {{ plain }} THEN NULL WHEN SUBSTR({{ raw }}, 11, 1) = 'T'
    THEN SUBSTR({{ raw }}, 1, 10) || ' ' || SUBSTR({{ raw }}, 12) ELSE {{ raw }} END AS {{ s }}
{%- elif step == 1 -%}
{#- A trailing UTC offset: 'Z', '+hh:mm' or '+hhmm' after a time of day. -#}
{%- set zone_len -%}
CASE WHEN LENGTH({{ s }}) > 10 AND SUBSTR({{ s }}, LENGTH({{ s }}), 1) = 'Z' THEN 1
    WHEN LENGTH({{ s }}) > 16 AND SUBSTR({{ s }}, LENGTH({{ s }}) - 5, 1) IN ('+', '-')
        AND SUBSTR({{ s }}, LENGTH({{ s }}) - 2, 1) = ':' THEN 6
    WHEN LENGTH({{ s }}) > 15 AND SUBSTR({{ s }}, LENGTH({{ s }}) - 4, 1) IN ('+', '-')
        AND SUBSTR({{ s }}, LENGTH({{ s }}) - 7, 1) = ':' THEN 5 ELSE 0 END
{%- endset -%}
{{ s }}, {{ fast }},
CASE {{ zone_len }} WHEN 1 THEN '+00:00'
    WHEN 6 THEN SUBSTR({{ s }}, LENGTH({{ s }}) - 5)
    WHEN 5 THEN SUBSTR({{ s }}, LENGTH({{ s }}) - 4, 3) || ':' || SUBSTR({{ s }}, LENGTH({{ s }}) - 1) END AS {{ name }}__zone,
TRIM(SUBSTR({{ s }}, 1, LENGTH({{ s }}) - {{ zone_len }})) AS {{ loc }}
{%- elif step == 2 -%}
{{ loc }}, {{ fast }}, {{ name }}__zone, SPLIT_PART({{ loc }}, ' ', 1) AS {{ d }},
REPLACE(REPLACE(SPLIT_PART({{ loc }}, ' ', 1), '.', '/'), '-', '/') AS {{ dn }}
{%- else -%}
{%- set rest = 'SUBSTR(' ~ loc ~ ', LENGTH(' ~ d ~ ') + 1)' -%}
COALESCE({{ fast }}, CASE
    {#- ISO and year-first forms: YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD (+ time). #}
    WHEN SUBSTR({{ loc }}, 5, 1) IN ('-', '/', '.') AND SUBSTR({{ loc }}, 8, 1) = SUBSTR({{ loc }}, 5, 1)
    THEN SUBSTR({{ loc }}, 1, 4) || '-' || SUBSTR({{ loc }}, 6, 2) || '-' || SUBSTR({{ loc }}, 9)
    {#- YYYYMMDD (+ time). #}
    WHEN LENGTH({{ d }}) = 8 AND TRY_CAST({{ d }} AS BIGINT) IS NOT NULL
    THEN SUBSTR({{ d }}, 1, 4) || '-' || SUBSTR({{ d }}, 5, 2) || '-' || SUBSTR({{ d }}, 7, 2) || {{ rest }}
{%- if date_order in ('DMY', 'MDY') %}
    {%- set first = "SPLIT_PART(" ~ dn ~ ", '/', 1)" -%}
    {%- set second = "SPLIT_PART(" ~ dn ~ ", '/', 2)" -%}
    {%- set day, month = (first, second) if date_order == 'DMY' else (second, first) %}
    {#- Day/month with a four-digit year last, in the configured order. #}
    WHEN LENGTH(SPLIT_PART({{ dn }}, '/', 3)) = 4 AND SPLIT_PART({{ dn }}, '/', 4) = ''
        AND LENGTH({{ first }}) IN (1, 2) AND LENGTH({{ second }}) IN (1, 2)
    THEN SPLIT_PART({{ dn }}, '/', 3) || '-' || LPAD({{ month }}, 2, '0') || '-' || LPAD({{ day }}, 2, '0') || {{ rest }}
{%- endif %}
    END) AS {{ name }}__iso, {{ name }}__zone
{%- endif -%}
{%- endmacro %}

{#- The UTC offset of `<name>__zone` in minutes (0 without one, NULL when out of range). -#}
{% macro offset_minutes(name) -%}
{%- set zone = name ~ '__zone' -%}
{%- set hours = 'TRY_CAST(SUBSTR(' ~ zone ~ ', 2, 2) AS INT)' -%}
{%- set minutes = 'TRY_CAST(SUBSTR(' ~ zone ~ ', 5, 2) AS INT)' -%}
CASE WHEN {{ zone }} IS NULL THEN 0 WHEN {{ hours }} <= 14 AND {{ minutes }} < 60
    THEN (CASE WHEN SUBSTR({{ zone }}, 1, 1) = '-' THEN -1 ELSE 1 END) * ({{ hours }} * 60 + {{ minutes }}) END
{%- endmacro %}

{#- The layer after the four above: local time and offset of `name`. -#}
{% macro local_time(name) -%}
{{ try_timestamp(name ~ '__iso') }} AS {{ name }}__local, {{ offset_minutes(name) }} AS {{ name }}__offset
{%- endmacro %}

{#- The UTC timestamp of `name` from its local time and offset. -#}
{% macro utc_time(name) -%}
{{ add_minutes(name ~ '__local', '-' ~ name ~ '__offset') }}
{%- endmacro %}
