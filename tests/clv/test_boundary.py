"""A fit at a boundary is a failed fit (issue #25, item 4), on one year of a wholesale-heavy invoice shop.

The shop (``tests/clv/simulate.py``: one-time retail buyers, regulars, a few
wholesale accounts ordering every week or two, cancellations; nobody who
bought twice stops within the year) gives BG/NBD no interior maximum: its
likelihood keeps rising as the dropout parameter ``a`` goes to 0. Without the
boundary check the optimiser stopped at a = 1e-5 and P(alive) = 1 for every
customer, which the run accepted (the UK gift-ware shop of issue #25).
"""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.clv.errors import BoundaryFitError, ClvInputError
from include.clv.fit import fit_and_score
from include.clv.likelihood import bgnbd_loglik, compress
from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, ClvSettings, build_clv_summary
from include.clv.selection import choose_purchase_model, degenerate_reason
from include.runtime.errors import NoRowsError, PipelineFinding
from include.runtime.warehouse import Warehouse
from tests.clv.simulate import stage_shop, wholesale_invoice_shop

END = dt.date(2026, 10, 31)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Raw tables and the weekly and daily summaries of one year of the wholesale shop."""
    tables = wholesale_invoice_shop()
    out = {"tables": tables}
    with Warehouse(f"duckdb:///{tmp_path_factory.mktemp('wholesale') / 'w.duckdb'}") as wh:
        wh.ensure_schema()
        stage_shop(wh, tables, [END])
        for unit in (7, 1):
            build_clv_summary(wh, END, ClvSettings(unit_days=unit))
            out[unit] = tuple(wh.query_df(f"SELECT * FROM clv_summary WHERE period = '{p}' ORDER BY customer_key")
                              for p in ("full", "calibration"))
    return out


def test_the_shop_has_the_shape_of_the_issue(shop):
    full, _ = shop[7]
    orders = shop["tables"]["raw_orders"]
    assert len(full) > 1000 and 0.5 < (full["frequency"] == 0).mean() < 0.8  # most customers bought once
    per = orders.groupby("source_id").size()
    assert (per >= 20).sum() >= 10  # a few wholesale accounts with many invoices...
    revenue = orders.assign(amount=orders["amount"].astype(float)).groupby("source_id")["amount"].sum()
    assert revenue.nlargest(25).sum() > 0.5 * revenue.sum()  # ...holding most of the revenue
    assert (orders["returned_amount"].astype(float) > 0).any()  # cancellations
    days = pd.to_datetime(orders["order_ts"])
    assert (days.max() - days.min()).days <= 366


@pytest.mark.parametrize("unit_days", [7, 1])
def test_bgnbd_has_no_interior_maximum_and_the_fit_says_so(shop, unit_days):
    full, calibration = shop[unit_days]
    # The likelihood itself, other parameters where the optimiser stopped: it rises as a -> 0, never turns.
    data, weights = compress([full[c].to_numpy(float) for c in ("frequency", "recency", "t")])
    with pytest.raises(BoundaryFitError) as failed:
        BetaGeoNBD.fit(full)
    assert "BG/NBD has no interior maximum (a -> 0)" in str(failed.value)
    stopped = {k: float(v) for k, v in
               (part.split(": ") for part in str(failed.value).split("parameters {")[1].rstrip("}").replace("'", "")
                .split(", "))}
    ll = [float(weights @ bgnbd_loglik(np.array([stopped["r"], stopped["alpha"], a, stopped["b"]]), *data)[0])
          for a in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8)]
    assert all(later >= earlier - 1e-6 for earlier, later in zip(ll, ll[1:], strict=False)), ll
    assert ll[-1] > ll[0]
    # What the optimiser stopped at says nobody ever drops out: the degenerate P(alive) = 1 for everyone.
    model = BetaGeoNBD(**stopped)
    assert (model.p_alive(full["frequency"], full["recency"], full["t"]) >= 0.999).all()
    assert "P(alive) = 1 for 100% of customers" in degenerate_reason(model, full)
    # MBG/NBD fares no better on this shape, and neither model is accepted on the calibration period.
    with pytest.raises(BoundaryFitError, match="MBG/NBD has no interior maximum"):
        ModifiedBetaGeoNBD.fit(full)
    choice = choose_purchase_model(calibration, 90 / unit_days)
    assert choice.chosen is None and set(choice.failures) == {"bgnbd", "mbgnbd"}


def test_lifetimes_finds_the_same_boundary(shop):
    """The reference library, without a penalty, also ends with dropout ~0 and P(alive) = 1 for everyone.

    Pareto/NBD (Schmittlein, Morrison & Colombo 1987) too: its mean dropout rate s / beta runs to 0, so
    a third candidate of the family would not find dropout in this data either.
    """
    from lifetimes import BetaGeoFitter, ParetoNBDFitter

    full, _ = shop[7]
    x, tx, t = full["frequency"], full["recency"], full["t"]
    with np.errstate(all="ignore"):
        bg = BetaGeoFitter().fit(x, tx, t)
        pareto = ParetoNBDFitter().fit(x, tx, t)
        p_alive = [np.asarray(m.conditional_probability_alive(x, tx, t)) for m in (bg, pareto)]
    # Where on the flat ridge each optimiser stops depends on the order of its sums (Pareto/NBD has ended at
    # s = 1e-7 and at s = 98 with a huge beta): what does not is that nobody is seen to drop out.
    assert bg.params_["a"] < 1e-3
    assert pareto.params_["s"] / pareto.params_["beta"] < 1e-3  # mean dropout rate per week
    assert all((p >= 0.999).all() for p in p_alive)


def test_no_model_fitting_is_unavailable_not_an_error(shop):
    full, calibration = shop[7]
    outcome = fit_and_score(full, calibration, ClvSettings())
    assert outcome.status == "unavailable" and not outcome.available
    assert outcome.reason == ("no purchase model fits this data: BG/NBD has no interior maximum (a -> 0); "
                              "MBG/NBD has no interior maximum (a -> 0)")
    assert outcome.scores.empty and outcome.backtest.empty and outcome.check_passed is None
    row = outcome.run_row(END, "run-1").iloc[0]
    assert row["status"] == "unavailable" and row["clv_model"] is None and row["customers"] == 0
    assert row["gross_margin"] == 0.35 and row["gross_margin_assumed"]
    assert "BG/NBD: failed" in row["candidates"] and "MBG/NBD: failed" in row["candidates"]


def test_a_valid_fit_passes_the_boundary_probe():
    """CDNOW (real data) and a shop with real dropout: interior maxima, not degenerate."""
    from include.clv.cdnow import cdnow_summaries
    from tests.clv.test_mbgnbd import shop_calibration

    full, _ = cdnow_summaries()
    model = BetaGeoNBD.fit(full)
    assert degenerate_reason(model, full) is None
    dropout = shop_calibration(seed=7)
    assert degenerate_reason(ModifiedBetaGeoNBD.fit(dropout), dropout) is None


def test_data_errors_still_stop_the_run(shop):
    full, calibration = shop[7]
    one_time = full.assign(frequency=0.0, recency=0.0)
    with pytest.raises(ClvInputError, match="repeat purchases") as no_repeat:
        fit_and_score(one_time, calibration.assign(frequency=0.0, recency=0.0), ClvSettings())
    assert isinstance(no_repeat.value, PipelineFinding)
    with pytest.raises(ClvInputError, match="negative values in monetary_value"):
        fit_and_score(full.assign(monetary_value=-1.0), calibration.assign(monetary_value=-1.0), ClvSettings())
    with pytest.raises(NoRowsError, match="clv_summary is empty"):
        fit_and_score(full.iloc[:0], calibration.iloc[:0], ClvSettings())
