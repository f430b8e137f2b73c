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

from include.experiment.lift import MIN_EXPECTED_NONZERO
from include.report.render import figure, not_available, svg, table
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
    # Without cost data profit lift cannot be measured at all (not "not yet"): the chart says which.
    if wh.has_table("segment_economics"):
        known = wh.query_df("SELECT cost_known FROM segment_economics WHERE as_of_date = :d", {"d": as_of_date})
        data["cost_known"] = bool(len(known)) and bool(known["cost_known"].fillna(False).all())
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


def decision_interval(row: Any) -> tuple[float, float, bool]:
    """The interval that decides "changed" for a ``segment_lift`` row: ``(low, high, simultaneous)``.

    The simultaneous interval (95% for all of the run's segments of the
    outcome at once); for a row written before it was stored (NULL there), the
    per-segment interval, and ``simultaneous`` False so the reader is told.
    """
    low, high = getattr(row, "simultaneous_low", float("nan")), getattr(row, "simultaneous_high", float("nan"))
    if pd.notna(low) and pd.notna(high):
        return float(low), float(high), True
    return row.ci_low, row.ci_high, False


def verdict(row: Any) -> str:
    """"changed" when the deciding interval excludes 0, else "no evidence of change" ("—" without an interval)."""
    low, high, simultaneous = decision_interval(row)
    if pd.isna(low) or pd.isna(high):
        return "—"
    text = "changed" if low > 0 or high < 0 else "no evidence of change"
    return text if simultaneous else f"{text} (this segment alone)"


def _lift_table(latest: pd.DataFrame, currency: str) -> str:
    e = html.escape
    rows = []
    if "mde" not in latest.columns:  # rows written before the MDE was stored
        latest = latest.assign(mde=float("nan"))
    for r in latest.sort_values(["segment_id", "metric"], key=lambda c: c.map(
            {m: i for i, m in enumerate(METRIC_LABELS)}) if c.name == "metric" else c).itertuples():

        def interval(low: float, high: float, metric: str = r.metric) -> str:
            if pd.isna(low) or pd.isna(high):
                return "—"
            return f"[{_value(metric, low, currency, True)}, {_value(metric, high, currency, True)}]"

        low, high, simultaneous = decision_interval(r)
        changed = verdict(r).startswith("changed")
        rows.append([e(str(r.segment_name)), e(METRIC_LABELS.get(r.metric, r.metric)),
                     _value(r.metric, r.treated_mean, currency), _value(r.metric, r.holdout_mean, currency),
                     ("<b>" if changed else "") + _value(r.metric, r.lift, currency, True) + ("</b>" if changed else ""),
                     ("<b>" if changed else "") + e(verdict(r)) + ("</b>" if changed else ""),
                     interval(low, high) if simultaneous else "—", interval(r.ci_low, r.ci_high),
                     _mde(r.metric, r.mde, currency), f"{int(r.n_treated):,} / {int(r.n_holdout):,}"])
    return table(["segment", "outcome", "treated", "holdout", "lift", "changed?",
                   "95% for all segments at once (decides)", "95% for this segment alone", "MDE (80% power)",
                   "n treated / holdout"], rows, numeric_from=2)


def _lift_chart(history: pd.DataFrame, segment_id: int, currency: str, cost_known: bool = True) -> str:
    """Lift over time with its 95% bands: retention (points) and profit per customer, one segment.

    The wide pale band is the simultaneous interval (all segments at once), the
    darker one inside it the per-segment interval. Without cost data the profit
    panel says profit cannot be measured (not that it is not measured yet).
    """
    fig, axes = figure(8, 2.4)
    fig.clf()
    seg = history[history["segment_id"] == segment_id]
    for i, (metric, scale, unit) in enumerate((("retention", 100, "pts"), ("profit", 1, currency))):
        ax = fig.add_subplot(1, 2, i + 1)
        part = seg[seg["metric"] == metric].sort_values("as_of_date")
        if part.empty:
            text = ("cannot be measured:\nno cost data (support contacts\nor servicing cost)"
                    if metric == "profit" and not cost_known else "not measured yet")
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        else:
            x = pd.to_datetime(part["as_of_date"])
            if "simultaneous_low" in part.columns and part["simultaneous_low"].notna().any():
                ax.fill_between(x, part["simultaneous_low"] * scale, part["simultaneous_high"] * scale,
                                color="#1b6ca8", alpha=0.10, label="95% for all segments at once")
            ax.fill_between(x, part["ci_low"] * scale, part["ci_high"] * scale, color="#1b6ca8", alpha=0.22,
                            label="95% for this segment alone")
            ax.plot(x, part["lift"] * scale, marker="o", color="#1b6ca8", label="lift")
            ax.tick_params(axis="x", labelrotation=30)
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_title(f"{METRIC_LABELS[metric]} lift ({unit})", fontsize=9)
    fig.tight_layout()
    return svg(fig)


def lift_sections(data: dict[str, Any] | None, currency: str = "£") -> list[tuple[str, str]]:
    """The report sections (title, HTML) for the experiment; a "not available" note when it has not run."""
    e = html.escape
    if not data:
        return [("Lift: treated vs holdout", not_available("lift", "the experiment stage has not run for this date"))]
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
            "outcome before the policy (CUPED).</p>"
            "<p><b>Which segments changed?</b> Each outcome is read for all the segments at once, and with "
            "several segments one of them would look changed by chance now and then if each had only its own "
            "95% interval. So a segment counts as <b>changed</b> (bold) only when its interval <i>for all "
            "segments at once</i> excludes 0: those intervals are wide enough that, with 95% confidence, all "
            "of one outcome's segments lie inside theirs together (Bonferroni: each at 1 &minus; 5%/m, m the "
            "segments measured). The narrower interval <i>for this segment alone</i> is the right one only for "
            "a single segment chosen before looking. MDE: the smallest true lift the per-segment comparison "
            "detects with 80% power (the all-at-once decision needs about a quarter more with 6 segments); an "
            "interval that includes 0 does not show there is no effect smaller than that. &mdash;: no interval, "
            "because an arm has under two customers or too few customers have the outcome at all (fewer than "
            f"{MIN_EXPECTED_NONZERO} with a non-zero value expected in the holdout): too little to measure.</p>")
    if latest.empty:
        body = head + not_available("lift", "the policy's first run: nothing treated yet, so no comparison")
    else:
        body = head + _lift_table(latest, currency)
        cost_known = data.get("cost_known", True)
        charts = "".join(f"<h3>{e(str(name))}</h3>{_lift_chart(history, int(sid), currency, cost_known)}"
                         for sid, name in latest.groupby("segment_id")["segment_name"].first().items())
        body += ("<p class='note'>Run over run, under this policy (pale band: 95% for all segments at once; "
                 "dark band: 95% for this segment alone):</p>" + charts)
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
                         + table(["segment", "profit / customer before", "after", "retention before", "after"],
                                 rows)))
    return sections
