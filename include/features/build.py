"""Customer features as of the run date, computed in the warehouse (``sql/features.sql``).

Numeric features (all as of the end of the as-of date):

- ``recency_days``: days since the last order;
- ``frequency`` / ``monetary``: orders and net revenue (paid minus returned) in the last 365 days;
- ``avg_order_value``, ``orders_lifetime``, ``revenue_lifetime``, ``tenure_days``;
- ``discount_share``: share of orders with a discount; ``return_rate``: returned / paid value;
- ``support_contacts`` and ``cost_to_serve`` in the last 365 days (the contact's own cost,
  else the configured cost per contact of its channel);
- ``usage_sessions`` in the last 90 days;
- ``email_open_rate`` / ``email_click_rate`` per send in the last 365 days (NULL without sends:
  a rate with no denominator is unknown, not 0).

Behaviour while active (lifetime, normalised by the customer's own orders or active span, so a
customer who has gone quiet keeps the profile of how they bought; recency says that they stopped):

- ``discount_depth``: discount / value of the discounted orders (0 without one); ``support_per_order``:
  support contacts per order; ``cost_per_contact``: support cost per contact (0 without contacts).
  Those two zeros mean "no denominator", not "none": the segmentation fills them with the mean
  of the customers who have the rate (``include.segmentation.model.UNDEFINED_RATES``);
- ``sessions_per_active_month``: sessions per month from the first to the last month with usage;
- ``email_open_rate_active``: opens per send in email months that began up to 31 days after an
  order (the lifetime rate when there is none; NULL without sends); ``email_click_per_open``: clicks
  per open (NULL without opens). The segmentation fills the NULLs like the zeros above
  (``include.segmentation.model.NULLABLE_RATES``).

Lifecycle: whether a customer still buys, judged against their own buying cadence, never averaged
away (segment names count member shares of each state, :mod:`include.segmentation.naming`):

- ``purchase_days``: days with an order; ``repeat_buyer``: 1 when that is two or more, else 0
  (a single purchase invents no buying rate: ``order_rate`` is unknown without a second one);
- ``cadence_days``: the customer's mean gap between purchase days, shrunk towards the shop's
  typical gap (:data:`CADENCE_PRIOR_GAPS`); one-time buyers get the shop's typical gap;
- ``lifecycle_state``: ``new`` (one-time buyer) or ``active`` (repeat buyer) while the last purchase
  is at most :data:`LAPSING_GAPS` cadences old, ``lapsing`` up to :data:`LAPSED_GAPS`, ``lapsed`` beyond.

Categorical traits: ``preferred_channel`` (most frequent order channel),
``plan_tier`` (latest plan on or before the date), ``region`` (golden record).
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

from include.extract.validate import run_boundaries
from include.runtime.errors import NoRowsError
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

NUMERIC_FEATURES: tuple[str, ...] = (
    "recency_days", "frequency", "monetary", "avg_order_value", "tenure_days",
    "discount_share", "return_rate", "support_contacts", "cost_to_serve",
    "usage_sessions", "email_open_rate", "email_click_rate",
)
#: Rates while active (see the module docstring): segmentation features, not profile columns.
ACTIVE_FEATURES: tuple[str, ...] = (
    "discount_depth", "support_per_order", "cost_per_contact", "sessions_per_active_month",
    "email_open_rate_active", "email_click_per_open",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("preferred_channel", "plan_tier", "region")
#: Lifecycle columns (see the module docstring): whether and how a customer still buys.
LIFECYCLE_COLUMNS: tuple[str, ...] = ("purchase_days", "repeat_buyer", "cadence_days", "lifecycle_state")
#: The states of ``lifecycle_state``.
LIFECYCLE_STATES: tuple[str, ...] = ("new", "active", "lapsing", "lapsed")
#: Every column of ``customer_features`` in table order (``features.sql`` selects them in this order).
FEATURE_COLUMNS: tuple[str, ...] = (
    "as_of_date", "customer_key", "recency_days", "frequency", "monetary", "avg_order_value", "orders_lifetime",
    "revenue_lifetime", "tenure_days", "discount_share", "return_rate", "support_contacts", "cost_to_serve",
    "usage_sessions", "email_open_rate", "email_click_rate", "preferred_channel", "plan_tier", "region",
    *ACTIVE_FEATURES, *LIFECYCLE_COLUMNS,
)

#: Silence, in cadences (the customer's mean gap between purchases), from which a customer is lapsing.
#: Why 2: a customer still buying at their own pace (purchases as a Poisson process at that rate, the
#: buying half of BG/NBD, Fader, Hardie & Lee 2005) goes two mean gaps without a purchase with
#: probability e^-2, about 14%: from there the silence is more often a sign than chance.
LAPSING_GAPS = 2.0
#: Silence, in cadences, from which a customer is lapsed: e^-3, about 5%, of customers still buying at
#: their own pace are this quiet, so at most one in twenty customers called lapsed is merely between orders.
LAPSED_GAPS = 3.0
#: Gaps of the shop's typical length added to a customer's own before their mean is taken: the posterior
#: mean of a gap under a prior worth one observed gap (Gamma-Poisson). One customer's mean gap over one
#: or two intervals is mostly noise (two orders a day apart are not a daily habit); the prior weighs
#: less as the customer's own intervals add up, so a long-standing customer is judged on their own pace.
CADENCE_PRIOR_GAPS = 1.0
#: The shop's typical gap when nobody in it bought twice (no cadence in the data at all): a quarter,
#: the default retention window, so that one-time buyers are new for half a year and lapsed after nine months.
FALLBACK_CADENCE_DAYS = 90.0


def feature_params(as_of_date: dt.date, snapshot_date: dt.date | None = None) -> dict[str, object]:
    """Bind parameters of ``features.sql``: the dates, the cutoff, the window starts and the lifecycle constants.

    ``snapshot_date`` is the staged snapshot read (default ``as_of_date``); the backtest reads the
    run's snapshot as of an earlier date.
    """
    params = run_boundaries(as_of_date)
    cutoff = params["cutoff_ts"]
    params["snapshot_date"] = snapshot_date or as_of_date
    params["year_start_ts"] = cutoff - dt.timedelta(days=365)
    params["quarter_start_ts"] = cutoff - dt.timedelta(days=90)
    params.update(lapsing_gaps=LAPSING_GAPS, lapsed_gaps=LAPSED_GAPS, cadence_prior_gaps=CADENCE_PRIOR_GAPS,
                  fallback_cadence_days=FALLBACK_CADENCE_DAYS)
    return params


def features_insert_sql(target: str = "customer_features", extra: dict[str, str] | None = None) -> str:
    """``INSERT INTO target`` of ``features.sql``'s rows; ``extra`` adds ``{column: SQL expression}`` first."""
    extra = extra or {}
    columns = ", ".join([*extra, *FEATURE_COLUMNS])
    values = ", ".join([*(f"{expr} AS {col}" for col, expr in extra.items()), *(f"f.{c}" for c in FEATURE_COLUMNS)])
    return f"INSERT INTO {target} ({columns})\nSELECT {values} FROM (\n{named_sql('features.sql')['features']}\n) f"


def build_customer_features(
    wh: Warehouse, as_of_date: dt.date, support_cost_by_channel: dict[str, float]
) -> dict[str, float]:
    """Replace ``customer_features``, ``customer_rfm`` and the channel costs they used for ``as_of_date``.

    The three tables are written in one transaction: a reader never sees
    this date's features without its RFM map, or costs that differ from the
    ones the features used.
    """
    costs = pd.DataFrame(
        {"as_of_date": as_of_date, "channel": list(support_cost_by_channel),
         "cost_per_contact": [float(v) for v in support_cost_by_channel.values()]}
    )
    with wh.transaction() as tx:
        tx.replace_partition("support_channel_costs", costs, {"as_of_date": as_of_date})
        params = feature_params(as_of_date)
        tx.run_script("DELETE FROM customer_features WHERE as_of_date = :as_of_date", params)
        tx.run_script(features_insert_sql(), params)
        tx.run_sql_file("rfm.sql", {"as_of_date": as_of_date})
        stats = tx.query_df(
            "SELECT COUNT(*) AS customers, AVG(frequency) AS mean_frequency, "
            "AVG(monetary) AS mean_monetary, AVG(recency_days) AS mean_recency_days "
            "FROM customer_features WHERE as_of_date = :as_of_date",
            {"as_of_date": as_of_date},
        ).iloc[0]
    metrics = {f"features_{k}": float(v or 0) for k, v in stats.items()}
    log.info("features: %d customers as of %s", int(metrics["features_customers"]), as_of_date)
    if metrics["features_customers"] == 0:
        raise NoRowsError(f"customer_features is empty for as_of_date={as_of_date}: no valid orders on or before it")
    return metrics


def features_as_of(wh: Warehouse, as_of_date: dt.date, snapshot_date: dt.date) -> pd.DataFrame:
    """Features as of ``as_of_date`` computed from the staged snapshot of ``snapshot_date``, without writing them.

    The backtest's features (:mod:`include.backtest`): the run's own staged data, read as of an
    earlier date by the same ``features.sql``. Ordered by ``customer_key``.
    """
    if snapshot_date < as_of_date:
        raise ValueError(f"the snapshot of {snapshot_date} does not hold data up to {as_of_date}")
    sql = named_sql("features.sql")["features"]
    frame = wh.query_df(f"SELECT * FROM (\n{sql}\n) f ORDER BY customer_key", feature_params(as_of_date, snapshot_date))
    return frame[list(FEATURE_COLUMNS)]


def load_features(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame:
    """The feature table for one date, ordered by ``customer_key`` (for determinism)."""
    return wh.query_df(
        "SELECT * FROM customer_features WHERE as_of_date = :as_of_date ORDER BY customer_key",
        {"as_of_date": as_of_date},
    )
