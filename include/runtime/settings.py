"""Run settings of the pipeline (every field can be overridden from the DAG trigger form)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Cost of one support contact by channel, used when the raw contact carries no cost.
DEFAULT_SUPPORT_COST_BY_CHANNEL: dict[str, float] = {
    "phone": 8.50,
    "chat": 3.20,
    "email": 2.10,
}

@dataclass(frozen=True)
class PipelineSettings:
    """Run settings; every field can be overridden from the DAG trigger form.

    Attributes
    ----------
    max_bad_share
        The extract task fails when the share of quarantined rows in any raw
        table exceeds this (the quarantine is written first, so it can be read).
    k_min, k_max
        Range of segment counts tried by the baseline k selection.
    k
        Fixed number of segments; ``None`` lets the k-selection rule choose.
    silhouette_sample
        Rows sampled (with ``seed``) to compute silhouette scores.
    seed
        Seed for every random choice in the run.
    staging_retention_runs
        How many as-of dates of staged rows to keep (older ones are pruned).
    algorithm
        ``kprototypes`` (numeric features + categorical traits) or ``kmeans``.
    n_init
        Initialisations per candidate fit (best cost kept).
    n_bootstrap
        Bootstrap refits for the stability check (Hennig's clusterboot).
    min_jaccard
        Quality gate: if any segment's mean bootstrap Jaccard is below this,
        the run's labels are not published and the previous ones stay.
    max_match_distance
        Largest centroid distance (z units) at which a segment inherits a
        previous run's segment id.
    clv_unit_days, clv_holdout_days
        Time unit of the BG/NBD summaries (1 = days, 7 = weeks) and the
        holdout length used to validate the CLV model every run.
    gross_margin, annual_discount_rate
        Margin on net revenue and the discount rate of CLV.
    hysteresis_runs
        Consecutive runs a customer must spend in a new segment before the published label moves.
    markov_window_runs, markov_periods
        Runs of transitions pooled into the Markov matrix; periods projected ahead.
    alert_top_outflow
        The migration check fails when more than this share of the top segment leaves it in one period.
    clv_use_champion
        Score with the registry's ``champion`` CLV models instead of refitting.
    clv_max_holdout_error_pct
        A refit becomes the champion only if its holdout aggregate error is within this.
    support_cost_by_channel
        Cost per support contact by channel, where the raw row has no cost.
    servicing_cost_per_customer, servicing_cost_per_order
        Servicing costs added to support costs in the segment economics
        (per customer per year, and per order).
    playbook_path
        Segment playbook TOML; ``None`` uses ``include/economics/playbook.toml``.
    identity_method
        ``splink`` (probabilistic linkage) or ``exact`` (email/phone baseline).
    identity_match_threshold
        Match probability at which Splink links two records into one customer.
    identity_retrain
        Train a new Splink model instead of reusing the last accepted one.
    identity_u_max_pairs
        Record pairs sampled to estimate Splink's u probabilities.
    identity_min_f1
        A newly trained model is accepted (reused by later runs) only if its
        clustered pairwise F1 reaches this where ground truth exists.
    phone_country
        ISO 3166 alpha-2 country of phone numbers written without a calling
        code; phones are matched in E.164 form.
    """

    max_bad_share: float = 0.05
    k_min: int = 3
    k_max: int = 8
    k: int | None = None
    silhouette_sample: int = 5000
    seed: int = 42
    staging_retention_runs: int = 4
    algorithm: str = "kprototypes"
    n_init: int = 4
    n_bootstrap: int = 20
    min_jaccard: float = 0.6
    max_match_distance: float = 1.5
    clv_unit_days: int = 7
    clv_holdout_days: int = 90
    gross_margin: float = 0.35
    annual_discount_rate: float = 0.10
    hysteresis_runs: int = 2
    markov_window_runs: int = 8
    markov_periods: int = 4
    alert_top_outflow: float = 0.2
    clv_use_champion: bool = False
    clv_max_holdout_error_pct: float = 25.0
    servicing_cost_per_customer: float = 4.0
    servicing_cost_per_order: float = 0.5
    playbook_path: str | None = None
    identity_method: str = "splink"
    identity_match_threshold: float = 0.95
    identity_retrain: bool = False
    identity_u_max_pairs: float = 2e7
    identity_min_f1: float = 0.95
    phone_country: str = "GB"
    support_cost_by_channel: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_SUPPORT_COST_BY_CHANNEL)
    )

    @classmethod
    def from_params(cls, params: dict | None) -> PipelineSettings:
        """Build settings from DAG params, ignoring unknown keys and ``None`` values."""
        params = params or {}
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in params.items() if k in known and v is not None}
        if "k" in values and int(values["k"]) <= 0:
            values.pop("k")
        return cls(**values)
