"""Every run setting of the pipeline, declared once.

:data:`SETTINGS` lists each setting with its default, JSON-schema type and
bounds, title, help text and trigger-form section. Everything else is built
from it:

- the DAG's ``params`` (``dags/customer_segmentation.py`` turns each
  :meth:`Setting.param_kwargs` into an ``airflow.sdk.Param``, so the trigger
  form and the REST API validate types and bounds with the same schema);
- :class:`PipelineSettings`, the frozen dataclass the stages read, whose
  :meth:`~PipelineSettings.from_params` rejects unknown keys (a typo in a
  trigger's conf), values outside the schema and invalid combinations with an
  error naming the setting.

Every number (a ``number`` setting, or a number inside one) must be finite.
JSON has no NaN or infinity, but Python's ``json.loads`` (the REST API, ``airflow
dags trigger --conf``) reads ``NaN``, ``Infinity`` and ``1e309`` into floats, and
JSON-schema bounds never reject NaN (every comparison with it is false). So
:meth:`Setting.json_schema` adds :data:`NOT_FINITE` under ``not`` to every number
schema: the trigger refuses such a value, naming the param, before a run exists;
:func:`check_params` refuses it again, naming the setting, in the run's first task.

``include/`` imports no Airflow: this module only describes the settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from include.runtime.errors import PipelineFinding


class SettingsError(PipelineFinding, ValueError):
    """The run's params or conf name an unknown setting, a value out of bounds, or a contradiction."""


#: Trigger-form sections, in the order the form shows them.
SECTIONS = ("Essentials", "Extract", "Identity", "Segmentation", "CLV", "Economics", "Migration", "Run")

#: CRM targets a run can push to (one ``push_<target>`` task each).
CRM_TARGETS = ("outbox", "webhook", "hubspot", "salesforce")

#: Cost of one support contact by channel, used when the raw contact carries no cost.
DEFAULT_SUPPORT_COST_BY_CHANNEL: dict[str, float] = {
    "phone": 8.50,
    "chat": 3.20,
    "email": 2.10,
}

#: Matches exactly the numbers that are not finite; every number schema carries it under ``not``. NaN passes
#: every bound (a comparison with NaN is false), so it satisfies the first branch, whose bounds no finite
#: number meets at once; the other two match only +infinity and -infinity (1e309 reads as infinity).
NOT_FINITE: dict[str, Any] = {
    "title": "NaN or infinity (a setting must be a finite number)",
    "anyOf": [{"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0},
              {"type": "number", "exclusiveMinimum": 1.7976931348623157e308},
              {"type": "number", "exclusiveMaximum": -1.7976931348623157e308}],
}
#: Gross margin on net revenue when the business gives none: an assumption, stated wherever a figure uses it
#: ("assumed 35% gross margin: set gross_margin"); see :func:`assumed`.
DEFAULT_GROSS_MARGIN = 0.35

#: The JSON-Schema dialect of every setting's schema, declared in it (``$schema``). Draft 7 has every keyword the
#: settings use (numeric ``exclusiveMinimum``/``exclusiveMaximum``, ``items`` as one schema, ``not``/``anyOf``,
#: ``format``), with the meaning they have in 2020-12, jsonschema's default. The dialect matters for speed:
#: Airflow's ``Param.resolve`` calls ``jsonschema.validate``, which checks the schema against its dialect's
#: metaschema on every call, and Airflow resolves every param whenever it serializes an operator (``airflow
#: dags test`` does ~8,600 resolves of the 54 params a date). Measured on the 2-core machine, 2026-12-07: 0.26
#: CPU-ms a resolve with draft 7's metaschema against 0.94 with 2020-12's, 25 of the demo's CPU-s
#: (apache/airflow#32434 reports the same cost in DAG parsing).
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

_PYTHON_TYPES = {"number": float, "integer": int, "boolean": bool, "string": str, "array": list, "object": dict}
_SCHEMA_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "items", "format",
                "additionalProperties", "uniqueItems", "examples", "values_display", "pattern", "minLength",
                "maxLength")


@dataclass(frozen=True)
class Setting:
    """One run setting: its value rules (JSON schema) and how the trigger form shows it.

    Parameters
    ----------
    name
        Key in the DAG's params / a trigger's conf, and attribute of :class:`PipelineSettings`.
    default
        Value when the run does not set it (``None`` only with ``nullable``).
    type
        JSON-schema type: ``number``, ``integer``, ``boolean``, ``string``, ``array`` or ``object``.
    title, help, section
        Label, help text and section of the trigger form (``section`` is one of :data:`SECTIONS`).
    nullable
        ``None`` is a valid value (an empty form field) with its own meaning.
    schema
        Further JSON-schema keywords: ``minimum``, ``maximum``, ``exclusiveMinimum``,
        ``exclusiveMaximum``, ``enum``, ``items``, ``format``, ``additionalProperties``,
        ``uniqueItems``, ``pattern``, ``minLength``, ``maxLength``, and the form hints ``examples`` and ``values_display``.
    setting
        ``False`` for params that steer the DAG itself (as-of date, CRM pushes)
        rather than a stage; they are not fields of :class:`PipelineSettings`.
    """

    name: str
    default: Any
    type: str
    title: str
    help: str
    section: str
    nullable: bool = False
    schema: Mapping[str, Any] = field(default_factory=dict)
    setting: bool = True

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema a value must satisfy (what Airflow's ``Param`` validates)."""
        unknown = set(self.schema) - set(_SCHEMA_KEYS)
        if unknown:
            raise ValueError(f"setting {self.name}: unsupported schema keywords {sorted(unknown)}")
        return {"$schema": SCHEMA_DIALECT,
                **_finite({"type": ["null", self.type] if self.nullable else self.type, **self.schema})}

    def param_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``airflow.sdk.Param`` for this setting (default first)."""
        return {"default": self.default, "title": self.title, "description": self.help,
                "section": self.section, **self.json_schema()}


def _finite(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with :data:`NOT_FINITE` refused wherever it admits a number (also in items and values)."""
    out = dict(schema)
    types = out.get("type")
    if "number" in ([types] if isinstance(types, str) else types or []):
        out["not"] = NOT_FINITE
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _finite(out[key])
    return out


def _non_finite(value: Any, path: str) -> list[tuple[str, float]]:
    """``(where, number)`` of every NaN or infinity in a setting's value (nested lists and objects included)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, value)]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}[{k!r}]")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def _s(name, default, type, title, help, section, **schema) -> Setting:
    nullable = schema.pop("nullable", False)
    setting = schema.pop("setting", True)
    return Setting(name, default, type, title, help, section, nullable, schema, setting)


SETTINGS: tuple[Setting, ...] = (
    # -- Essentials: what most runs change ---------------------------------
    _s("as_of_date", None, "string", "As-of date",
       "Run for this date (YYYY-MM-DD); empty = the day before the run's data interval end.",
       "Essentials", nullable=True, format="date", setting=False),
    _s("crm_targets", ["outbox"], "array", "CRM targets",
       "CRM targets to push changed labels to (connections crm_webhook, crm_hubspot, crm_salesforce).",
       "Essentials", items={"type": "string", "enum": list(CRM_TARGETS)}, uniqueItems=True,
       examples=list(CRM_TARGETS), setting=False),
    _s("crm_dry_run", False, "boolean", "CRM dry run",
       "Report what each push would send; send nothing.", "Essentials", setting=False),
    _s("k", None, "integer", "Number of segments",
       "Fixed number of segments; empty = choose k by silhouette between k_min and k_max.",
       "Essentials", nullable=True, minimum=2, maximum=20),
    # -- Extract ------------------------------------------------------------
    _s("max_bad_share", 0.05, "number", "Largest quarantined share",
       "Fail extract when a raw table's quarantined share is above this (the quarantine is written first).",
       "Extract", minimum=0, maximum=1),
    _s("staging_retention_runs", 4, "integer", "Staged runs kept",
       "How many as-of dates of staged rows to keep; older ones are pruned.", "Extract", minimum=1),
    _s("date_order", "ISO", "string", "Date order of d/m/y-style dates",
       "How extract reads dates with a four-digit year last: ISO = only unambiguous forms (ISO 8601 with an "
       "optional UTC offset, YYYY/MM/DD, YYYYMMDD); DMY reads 31/12/1980 and 31.12.1980; MDY reads 12/31/1980.",
       "Extract", enum=["ISO", "DMY", "MDY"]),
    _s("business_start_date", "1970-01-01", "string", "Earliest plausible event date",
       "Orders, returns, contacts, usage, emails, plans and customer records dated before this are quarantined "
       "(date_before_business_start): a year-0001 date is bad data, not a customer of 2,000 years' tenure.",
       "Extract", format="date"),
    _s("max_amount", 1e9, "number", "Largest plausible amount or count",
       "A raw amount, cost or count above this is quarantined (value_above_bound; an optional column is nulled "
       "instead): 1e308 is bad data, and its sums overflow.", "Extract", exclusiveMinimum=0),
    _s("created_at_grace_days", 1, "integer", "Days an order may precede its customer record",
       "An order or return dated more than this many days before its customer record's created_at is "
       "quarantined (before_customer_created); empty = no check (a created_at that is an import date).",
       "Extract", nullable=True, minimum=0),
    _s("outlier_log_mads", 8.0, "number", "Flag amounts this far above the shop's typical one",
       "An order or return amount whose logarithm lies more than this many robust standard deviations "
       "(1.4826 x MAD) above the median of the staged amounts is flagged in extract_flags and kept: a statistical "
       "rule flags, it never drops.", "Extract", exclusiveMinimum=0),
    # -- Identity -----------------------------------------------------------
    _s("identity_method", "splink", "string", "Identity method",
       "Probabilistic linkage (Splink) or the exact email/phone baseline.", "Identity",
       enum=["splink", "exact"]),
    _s("identity_match_threshold", 0.95, "number", "Match probability threshold",
       "Match probability at which Splink links two records into one customer.", "Identity",
       exclusiveMinimum=0, exclusiveMaximum=1),
    _s("phone_country", "GB", "string", "Phone country",
       "Country (ISO 3166 alpha-2) of phone numbers written without a calling code; phones are matched in "
       "E.164 form.", "Identity",
       enum=["GB", "IE", "US", "CA", "DE", "AT", "CH", "FR", "BE", "NL", "ES", "IT", "AU", "NZ"]),
    _s("identity_retrain", False, "boolean", "Retrain the identity model",
       "Train a new Splink model instead of reusing the last accepted one.", "Identity"),
    _s("identity_u_max_pairs", 1e7, "number", "Pairs sampled for u",
       "Record pairs sampled to estimate Splink's u probabilities (1e7: the graded address levels are rare "
       "among random pairs, so every sampled pair is compared; 2e7 cost 6 CPU-s more for no better F1).",
       "Identity", minimum=1e4),
    _s("identity_min_f1", 0.95, "number", "Least F1 to accept a model",
       "Where ground truth exists, a newly trained model is accepted (reused later) only at this pairwise F1.",
       "Identity", minimum=0, maximum=1),
    _s("identity_relink", "incremental", "string", "Identity re-link",
       "incremental: link only new and changed records against the previous run's clusters (when it used the "
       "same model and columns; otherwise a full re-link runs by itself); full: re-link every record.",
       "Identity", enum=["incremental", "full"]),
    _s("identity_model_max_age_days", 91, "integer", "Identity model age limit (days)",
       "Retrain the Splink model (and re-link everyone) when the model was trained this many days before the "
       "as-of date; 0 = keep the model until the columns change or identity_retrain is ticked.", "Identity",
       minimum=0),
    _s("identity_min_estimated_precision", 0.98, "number", "Least estimated identity precision",
       "Bar for the truth-free estimate of the share of links that are true (mean match probability of the "
       "links); below it the run is degraded or fails (identity_below_bar).", "Identity", minimum=0, maximum=1),
    _s("identity_min_estimated_recall", 0.9, "number", "Least estimated identity recall",
       "Bar for the truth-free estimate of the share of expected matches the links hold; below it the run is "
       "degraded or fails (identity_below_bar).", "Identity", minimum=0, maximum=1),
    _s("identity_below_bar", "degrade", "string", "Identity below the quality bar",
       "degrade: write the run and mark it degraded (a WARNING, identity_runs.degraded, the report's banner); "
       "fail: fail the task and write nothing.", "Identity", enum=["degrade", "fail"]),
    # -- Segmentation -------------------------------------------------------
    _s("k_min", 3, "integer", "Smallest k tried", "Smallest number of segments the k selection tries.",
       "Segmentation", minimum=2, maximum=20),
    _s("k_max", 8, "integer", "Largest k tried", "Largest number of segments the k selection tries.",
       "Segmentation", minimum=2, maximum=20),
    _s("algorithm", "spectral", "string", "Algorithm",
       "Spectral segments on a sample's neighbour graph (numeric features), k-prototypes on numeric features + "
       "categorical traits, or KMeans on numeric features only.",
       "Segmentation", enum=["spectral", "kprototypes", "kmeans"]),
    _s("n_init", 4, "integer", "Initialisations per fit", "Initialisations per candidate fit (best cost kept).",
       "Segmentation", minimum=1, maximum=50),
    _s("n_bootstrap", 20, "integer", "Bootstrap refits",
       "Bootstrap refits for the stability check (Hennig's clusterboot).", "Segmentation", minimum=2, maximum=200),
    _s("min_jaccard", 0.75, "number", "Quality gate: least Jaccard",
       "Publish only if every segment's mean bootstrap Jaccard reaches this; else the previous labels stay.",
       "Segmentation", minimum=0, maximum=1),
    _s("max_match_distance", 1.5, "number", "Largest centroid distance to keep an id",
       "Largest centroid distance (z units) at which a segment inherits a previous run's segment id.",
       "Segmentation", minimum=0),
    _s("silhouette_sample", 5000, "integer", "Silhouette sample",
       "Rows sampled (with the seed) to compute silhouette scores.", "Segmentation", minimum=100),
    # -- CLV ----------------------------------------------------------------
    _s("clv_unit_days", 7, "integer", "CLV time unit (days)",
       "Time unit of the BG/NBD summaries: 1 = days, 7 = weeks.", "CLV", enum=[1, 7]),
    _s("clv_holdout_days", 90, "integer", "CLV holdout (days)",
       "Holdout length used to validate the CLV model every run.", "CLV", minimum=7, maximum=365),
    _s("clv_use_champion", False, "boolean", "Score with the champion models",
       "Score CLV with the registry's champion models instead of refitting.", "CLV"),
    _s("clv_fit_sample_size", 50000, "integer", "CLV fit sample (customers)",
       "Above this many customers the CLV models are fitted on a sample drawn with the seed; every customer is "
       "validated and scored.", "CLV", minimum=1000),
    _s("clv_max_holdout_error_pct", 25.0, "number", "Largest holdout error for a champion (%)",
       "A refit becomes the champion only if its holdout aggregate error is within this.", "CLV", minimum=0),
    _s("clv_min_gini", 0.2, "number", "Least CLV ranking quality (normalised Gini)",
       "A CLV fit passes its check only if ranking customers by predicted value orders their realised holdout "
       "revenue at least this well (normalised Gini: 1 perfect, 0 no better than chance).", "CLV",
       minimum=0, maximum=1),
    _s("annual_discount_rate", 0.10, "number", "Annual discount rate", "Discount rate of CLV.", "CLV",
       minimum=0, maximum=1),
    # -- Economics ----------------------------------------------------------
    _s("gross_margin", DEFAULT_GROSS_MARGIN, "number", "Gross margin",
       "Margin on net revenue (CLV and economics). Left at its default it is an assumption, and every figure "
       "that uses it says so.", "Economics", minimum=0, maximum=1),
    _s("servicing_cost_per_customer", 0.0, "number", "Servicing cost per customer",
       "Yearly servicing cost per customer, added to support costs; 0 = none configured (without support "
       "data, cost-to-serve and profit are then reported as unknown, never invented).", "Economics", minimum=0),
    _s("servicing_cost_per_order", 0.0, "number", "Servicing cost per order",
       "Servicing cost per order, added to support costs; 0 = none configured.", "Economics", minimum=0),
    _s("currency_code", None, "string", "Currency code",
       "ISO 4217 code of the amounts (report, summary, CRM fields); empty = the currency the loaded data "
       "declares (load_manifest.currency), GBP when it declares none. Must agree with a declared currency.",
       "Economics", nullable=True, pattern="^[A-Z]{3}$"),
    _s("currency_symbol", None, "string", "Currency symbol",
       "Symbol shown beside amounts; empty = the currency's usual symbol (EUR: €, USD: $).", "Economics",
       nullable=True, minLength=1, maxLength=4),
    _s("retention_window_days", 90, "integer", "Retention window (days)",
       "Repeat retention: of the customers who ordered in the window before the last one, the share who "
       "ordered again in the last window.", "Economics", minimum=7, maximum=365),
    _s("support_cost_by_channel", dict(DEFAULT_SUPPORT_COST_BY_CHANNEL), "object", "Support cost by channel",
       "Cost per support contact by channel, where the raw contact row carries no cost.", "Economics",
       additionalProperties={"type": "number", "minimum": 0}),
    _s("playbook_path", None, "string", "Playbook file",
       "Segment playbook TOML; empty uses include/economics/playbook.toml.", "Economics", nullable=True),
    _s("holdout_share", 0.10, "number", "Holdout share",
       "Share of every segment kept out of the playbook (no action sent) to measure its lift; stable per "
       "customer and experiment name. 0 measures nothing.", "Economics", minimum=0, maximum=0.5),
    _s("experiment_name", "segment-playbook", "string", "Experiment name",
       "Name of the holdout experiment: a customer's holdout draw hashes it with the customer key, so a new "
       "name reshuffles the holdout.", "Economics", minLength=1, maxLength=80),
    # -- Migration ----------------------------------------------------------
    _s("hysteresis_runs", 2, "integer", "Runs before a label moves",
       "Consecutive runs a customer must spend in a new segment before the published label moves.",
       "Migration", minimum=1, maximum=12),
    _s("markov_window_runs", 8, "integer", "Markov window (runs)", "Runs of transitions pooled into the Markov matrix.",
       "Migration", minimum=1),
    _s("markov_periods", 4, "integer", "Markov periods ahead", "Periods the Markov view projects ahead.",
       "Migration", minimum=1),
    _s("alert_top_outflow", 0.2, "number", "Alert: top-segment outflow",
       "The migration check fails when more than this share of the top segment leaves it in one period.",
       "Migration", minimum=0, maximum=1),
    # -- Run ----------------------------------------------------------------
    _s("seed", 42, "integer", "Random seed", "Seed of every random choice in the run.", "Run"),
    # -- CRM and erasure (issue #29): steer the DAG's push and erasure tasks, not a stage -----------------
    _s("crm_on_merge", "survivor", "string", "CRM: records of a vanished customer key",
       "What a CRM record keyed by a customer key that no longer exists (merged away, no longer published) "
       "gets: the survivor's labels, or a clear.", "Run", enum=["survivor", "clear"], setting=False),
    _s("erase_source_ids", [], "array", "Erase persons (source ids)",
       "Source ids (system:id) of persons to erase before this run: every warehouse row, a clear to each CRM "
       "record, and kept out of later loads (include/erasure). The ids stay in this run's conf in Airflow's "
       "database: `python -m include.erasure --ids-file` leaves none.", "Run",
       items={"type": "string", "pattern": "^[^:]+:.+$"}, setting=False),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _python_type(s: Setting) -> Any:
    base = _PYTHON_TYPES[s.type]
    return base | None if s.nullable else base


def _dataclass_field(s: Setting) -> tuple[str, Any, Any]:
    default = s.default
    if isinstance(default, list | dict):
        return s.name, _python_type(s), field(default_factory=lambda d=default: type(d)(d))
    return s.name, _python_type(s), field(default=default)


def _docstring() -> str:
    lines = ["Run settings, one attribute per :data:`SETTINGS` entry (built from it).", "",
             "Attributes", "----------"]
    for s in SETTINGS:
        if s.setting:
            lines += [s.name, f"    {s.title}: {s.help} Default ``{s.default!r}``."]
    return "\n".join(lines)


def _from_params(cls, params: Mapping[str, Any] | None) -> Any:
    """Build settings from a run's params (DAG params merged with the trigger's conf).

    ``None`` means "the default". Raises :class:`SettingsError` naming any
    unknown key (with the closest known name), any value its schema rejects,
    and contradictory combinations (``k_min > k_max``).
    """
    params = dict(params or {})
    check_params(params)
    values = {k: v for k, v in params.items() if k in BY_NAME and BY_NAME[k].setting and v is not None}
    if "k" in values and int(values["k"]) <= 0:  # 0 or less: choose k (kept from the old form)
        values.pop("k")
    for name, value in list(values.items()):
        if BY_NAME[name].type == "number":
            values[name] = float(value)
    return cls(**values)


def check_params(params: Mapping[str, Any]) -> None:
    """Raise :class:`SettingsError` for unknown keys, out-of-schema values and contradictions."""
    from jsonschema import FormatChecker
    from jsonschema.validators import validator_for

    problems = []
    for key in params:
        if key not in BY_NAME:
            close = difflib.get_close_matches(key, BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown setting {key!r}{hint}")
    for key, value in params.items():
        s = BY_NAME.get(key)
        if s is None or value is None or (key == "k" and isinstance(value, int) and value <= 0):
            continue
        bad = _non_finite(value, key)
        if bad:  # named plainly: the schema's own message for it is "nan should not be valid under {...}"
            problems += [f"setting {where}={number!r} is not a finite number (NaN and infinity are refused)"
                         for where, number in bad]
            continue
        schema = {k: v for k, v in s.json_schema().items() if k not in ("examples", "values_display")}
        validator = validator_for(schema)  # the dialect the schema declares (SCHEMA_DIALECT), as Param.resolve
        for error in validator(schema, format_checker=FormatChecker()).iter_errors(value):
            problems.append(f"setting {key}={value!r}: {error.message}")
    k_min, k_max = params.get("k_min"), params.get("k_max")
    k_min = BY_NAME["k_min"].default if k_min is None else k_min
    k_max = BY_NAME["k_max"].default if k_max is None else k_max
    if isinstance(k_min, int) and isinstance(k_max, int) and k_min > k_max:
        problems.append(f"k_min={k_min} is greater than k_max={k_max}")
    if problems:
        raise SettingsError("invalid run settings: " + "; ".join(problems) +
                            f". Known settings: {', '.join(BY_NAME)}")


PipelineSettings = dataclasses.make_dataclass(
    "PipelineSettings",
    [_dataclass_field(s) for s in SETTINGS if s.setting],
    frozen=True,
    namespace={"from_params": classmethod(_from_params), "__module__": __name__},
)
PipelineSettings.__doc__ = _docstring()


def assumed(settings: Any, name: str) -> bool:
    """Whether the run left setting ``name`` at its declared default: a figure using it rests on an assumption.

    The report, the summary and the warehouse tables (``clv_runs.gross_margin_assumed``,
    ``segment_economics.gross_margin_assumed``) say so where the figure is shown. A
    value set equal to the default is indistinguishable from the default and is
    reported as assumed too.
    """
    return getattr(settings, name) == BY_NAME[name].default
