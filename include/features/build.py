"""Customer features as of the run date, computed in the warehouse (``sql/features.sql``).

Numeric features (all as of the end of the as-of date):

- ``recency_days``: days since the last order;
- ``frequency`` / ``monetary``: orders and net revenue (paid minus returned) in the last 365 days;
- ``avg_order_value``, ``orders_lifetime``, ``revenue_lifetime``, ``tenure_days``;
- ``discount_share``: share of orders with a discount; ``return_rate``: returned / paid value;
- ``support_contacts`` and ``cost_to_serve`` in the last 365 days (the contact's own cost,
  else the configured cost per contact of its channel);
- ``usage_sessions`` in the last 90 days;
- ``email_open_rate`` / ``email_click_rate`` per send in the last 365 days (0 without sends).

Behaviour while active (lifetime, normalised by the customer's own orders or active span, so a
customer who has gone quiet keeps the profile of how they bought; recency says that they stopped):

- ``discount_depth``: discount / value of the discounted orders (0 without one); ``support_per_order``:
  support contacts per order; ``cost_per_contact``: support cost per contact (0 without contacts).
  Those two zeros mean "no denominator", not "none": the segmentation fills them with the mean
  of the customers who have the rate (``include.segmentation.model.UNDEFINED_RATES``);
- ``sessions_per_active_month``: sessions per month from the first to the last month with usage;
- ``email_open_rate_active``: opens per send in email months that began up to 31 days after an
  order (the lifetime rate when there is none); ``email_click_per_open``: clicks per open.

Categorical traits: ``preferred_channel`` (most frequent order channel),
``plan_tier`` (latest plan on or before the date), ``region`` (golden record).
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd

from include.extract.validate import run_boundaries
from include.runtime.errors import NoRowsError
from include.runtime.warehouse import Warehouse

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


def feature_params(as_of_date: dt.date) -> dict[str, object]:
    """Bind parameters of ``features.sql``: the date, its cutoff and the window starts."""
    params = run_boundaries(as_of_date)
    cutoff = params["cutoff_ts"]
    params["year_start_ts"] = cutoff - dt.timedelta(days=365)
    params["quarter_start_ts"] = cutoff - dt.timedelta(days=90)
    return params


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
        tx.run_sql_file("features.sql", feature_params(as_of_date))
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


def load_features(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame:
    """The feature table for one date, ordered by ``customer_key`` (for determinism)."""
    return wh.query_df(
        "SELECT * FROM customer_features WHERE as_of_date = :as_of_date ORDER BY customer_key",
        {"as_of_date": as_of_date},
    )
