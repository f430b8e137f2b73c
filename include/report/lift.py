"""The report's experiment sections: treated-vs-holdout lift per segment, and before/after a policy change.

The randomised comparison (``segment_lift``: treated against the holdout of
the same segment, same dates) and the before/after view (segment economics
on the last date of the previous policy against now) are separate sections,
and the second says it is not randomised: everything else that changed
between the two dates moves it too. Only aggregates are read; no customer keys.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pandas as pd

from include.runtime.warehouse import Warehouse, named_sql

#: How each metric is shown: label, whether it is money, and the scale of a point.
METRIC_LABELS = {"retention": "Repeat retention", "revenue": "Revenue / customer",
                 "cost_to_serve": "Cost to serve / customer", "profit": "Profit / customer"}


def load_lift_data(wh: Warehouse, as_of_date: dt.date) -> dict[str, Any] | None:
    """The lift of ``as_of_date``, its history under the same policy, and a before/after view if the policy changed."""
    if not wh.has_table("segment_lift") or not wh.has_table("policy_runs"):
        return None
    sql = named_sql("experiment.sql")
    policy = wh.query_df(sql["policy_of_date"], {"as_of_date": as_of_date})
    if policy.empty:
        return None
    row = policy.iloc[0]
    keys = {"experiment_name": row["experiment_name"], "policy_hash": row["policy_hash"],
            "policy_start": row["policy_start"], "as_of_date": as_of_date}
    history = wh.query_df(sql["lift_under_policy"], keys)
    data: dict[str, Any] = {"policy": row, "history": history,
                            "latest": history[pd.to_datetime(history["as_of_date"]) == pd.Timestamp(as_of_date)]}
    before = wh.scalar(sql["last_date_of_previous_policy"],
                       {k: keys[k] for k in ("experiment_name", "policy_start", "policy_hash")})
    if before is not None:
        before = pd.Timestamp(before).date()
        econ = wh.query_df(sql["economics_before_after"], {"before_date": before, "as_of_date": as_of_date})
        data["before_after"] = (before, econ)
    return data


def _value(metric: str, value: float, currency: str, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return "—"
    if metric == "retention":
        return f"{100 * value:+.1f} pts" if signed else f"{100 * value:.1f}%"
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    return f"{sign}{currency}{abs(value):,.2f}"


def _mde(metric: str, value: float, currency: str) -> str:
    if metric == "retention" and pd.notna(value):
        return f"{100 * value:.1f} pts"
    return _value(metric, value, currency)


def _lift_table(latest: pd.DataFrame, currency: str) -> str:
    from include.report.html import _table

    e = html.escape
    rows = []
    if "mde" not in latest.columns:  # rows written before the MDE was stored
        latest = latest.assign(mde=float("nan"))
    for r in latest.sort_values(["segment_id", "metric"], key=lambda c: c.map(
            {m: i for i, m in enumerate(METRIC_LABELS)}) if c.name == "metric" else c).itertuples():
        ci = (f"[{_value(r.metric, r.ci_low, currency, True)}, {_value(r.metric, r.ci_high, currency, True)}]"
              if pd.notna(r.ci_low) else "—")
        excludes = pd.notna(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0)
        rows.append([e(str(r.segment_name)), e(METRIC_LABELS.get(r.metric, r.metric)),
                     _value(r.metric, r.treated_mean, currency), _value(r.metric, r.holdout_mean, currency),
                     ("<b>" if excludes else "") + _value(r.metric, r.lift, currency, True) + ("</b>" if excludes else ""),
                     ci, _mde(r.metric, r.mde, currency), f"{int(r.n_treated):,} / {int(r.n_holdout):,}"])
    return _table(["segment", "outcome", "treated", "holdout", "lift", "95% interval", "MDE (80% power)",
                   "n treated / holdout"], rows, numeric_from=2)


def _lift_chart(history: pd.DataFrame, segment_id: int, currency: str) -> str:
    """Lift over time with its 95% band: retention (points) and profit per customer, one segment."""
    from include.report.html import _figure, _svg

    fig, axes = _figure(8, 2.4)
    fig.clf()
    seg = history[history["segment_id"] == segment_id]
    for i, (metric, scale, unit) in enumerate((("retention", 100, "pts"), ("profit", 1, currency))):
        ax = fig.add_subplot(1, 2, i + 1)
        part = seg[seg["metric"] == metric].sort_values("as_of_date")
        if part.empty:
            ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes)
        else:
            x = pd.to_datetime(part["as_of_date"])
            ax.fill_between(x, part["ci_low"] * scale, part["ci_high"] * scale, color="#1b6ca8", alpha=0.18,
                            label="95% interval")
            ax.plot(x, part["lift"] * scale, marker="o", color="#1b6ca8", label="lift")
            ax.tick_params(axis="x", labelrotation=30)
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_title(f"{METRIC_LABELS[metric]} lift ({unit})", fontsize=9)
    fig.tight_layout()
    return _svg(fig)


def lift_sections(data: dict[str, Any] | None, currency: str = "£") -> list[tuple[str, str]]:
    """The report sections (title, HTML) for the experiment; a "not available" note when it has not run."""
    from include.report.html import _not_available, _table

    e = html.escape
    if not data:
        return [("Lift: treated vs holdout", _not_available("lift", "the experiment stage has not run for this date"))]
    policy, latest, history = data["policy"], data["latest"], data["history"]
    window = ""
    if not latest.empty:
        start = pd.Timestamp(latest["window_start"].iloc[0]).date()
        days = (as_of := pd.Timestamp(latest["as_of_date"].iloc[0]).date()) - start + dt.timedelta(days=1)
        window = (f"Outcomes are measured only after the policy started: from {start} to {as_of} ({days.days} "
                  "days), one cumulative window, each customer once. ")
    head = (f"<p>Experiment <code>{e(str(policy['experiment_name']))}</code>: {float(policy['holdout_share']):.0%} "
            f"of every segment is held out of the playbook at random (stable per customer). Playbook "
            f"<code>{e(str(policy['policy_hash']))}</code> in force since {str(policy['policy_start'])[:10]}; "
            f"{int(policy['holdout_customers']):,} of {int(policy['customers']):,} customers in the holdout. "
            f"{window}Intention to treat: each customer counts in the segment and arm it had on its first date "
            "under the policy. Money outcomes are per customer over the whole window; repeat retention is the "
            "share of the customers who ordered in the retention window before the policy who ordered again "
            "in it (its last retention window once longer). Lifts are adjusted for each customer's same "
            "outcome before the policy (CUPED); bold lifts have an interval that excludes 0. MDE: the "
            "smallest true lift this comparison detects with 80% power; an interval that includes 0 does not "
            "show there is no effect smaller than the MDE.</p>")
    if latest.empty:
        body = head + _not_available("lift", "the policy's first run: nothing treated yet, so no comparison")
    else:
        body = head + _lift_table(latest, currency)
        charts = "".join(f"<h3>{e(str(name))}</h3>{_lift_chart(history, int(sid), currency)}"
                         for sid, name in latest.groupby("segment_id")["segment_name"].first().items())
        body += "<p class='note'>Run over run, under this policy:</p>" + charts
    sections = [("Lift: treated vs holdout", body)]
    if "before_after" in data:
        before, econ = data["before_after"]
        rows = []
        for name, g in econ.groupby("segment_name"):
            b = g[pd.to_datetime(g["as_of_date"]) == pd.Timestamp(before)]
            a = g[pd.to_datetime(g["as_of_date"]) != pd.Timestamp(before)]
            if b.empty or a.empty:
                continue
            b, a = b.iloc[0], a.iloc[0]
            rows.append([e(str(name)), _value("profit", b.profit_per_customer, currency),
                         _value("profit", a.profit_per_customer, currency),
                         _value("retention", b.repeat_retention, currency),
                         _value("retention", a.repeat_retention, currency)])
        sections.append(("Before/after the policy change (not randomised)",
                         f"<p class='na'>Before/after view, not an experiment: the last run under the previous "
                         f"playbook ({before}) against now. Season, customer mix and everything else that changed "
                         "between the dates move these numbers too; only the treated-vs-holdout lift above "
                         "measures what the playbook did.</p>"
                         + _table(["segment", "profit / customer before", "after", "retention before", "after"],
                                  rows)))
    return sections
