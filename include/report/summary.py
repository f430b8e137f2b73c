"""Print where a run's results are: warehouse tables, segments, MLflow runs, UIs.

Run with ``python -m include.report.summary`` (the demo command does).
"""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd

from include.report.render import NO_COST
from include.runtime.paths import data_dir, default_warehouse_url, mlflow_tracking_uri
from include.runtime.warehouse import Warehouse

OUTPUT_TABLES = (
    "quarantine", "identity_map", "customers", "customer_features",
    "segment_assignments", "segment_profiles", "customer_segments",
)


def main() -> None:
    url = default_warehouse_url()
    with Warehouse(url) as wh:
        if not wh.has_table("customer_segments"):
            print(f"No results yet in {url}")
            return
        dates = wh.query_df("SELECT DISTINCT as_of_date FROM customer_segments ORDER BY as_of_date")
        latest = dates["as_of_date"].iloc[-1]
        print(f"\nWarehouse: {url}")
        print(f"As-of dates published: {', '.join(str(d)[:10] for d in dates['as_of_date'])}")
        print(f"\nRows for the latest as-of date ({str(latest)[:10]}):")
        for table in OUTPUT_TABLES:
            n = wh.scalar(f"SELECT COUNT(*) FROM {table} WHERE as_of_date = :d", {"d": latest})
            print(f"  {table:22s} {n:>10,d}")
        profiles = wh.query_df(
            "SELECT COALESCE(l.segment_id, p.segment_id) AS segment_id, COALESCE(l.segment_name, p.segment_name) "
            "AS segment_name, p.customers, p.customer_share, p.monetary, p.frequency, p.recency_days, "
            "p.cost_to_serve, p.jaccard, p.model_run_id FROM segment_profiles p LEFT JOIN segment_labels l "
            "ON l.as_of_date = p.as_of_date AND l.fit_segment = p.fit_segment WHERE p.as_of_date = :d "
            "ORDER BY 1", {"d": latest})
        gate = wh.query_df("SELECT * FROM segmentation_runs WHERE as_of_date = :d", {"d": latest})
        rfm = wh.query_df("SELECT rfm_segment, COUNT(*) AS n FROM customer_segments WHERE as_of_date = :d "
                          "GROUP BY rfm_segment ORDER BY n DESC", {"d": latest})
        clv = wh.query_df("SELECT segment_id, segment_name, mean_clv_365d, mean_clv_365d_low, mean_clv_365d_high, "
                          "mean_p_alive, flag, reason FROM segment_clv_check WHERE as_of_date = :d ORDER BY segment_id",
                          {"d": latest}) if wh.has_table("segment_clv_check") else None
        clv_model = wh.query_df("SELECT clv_model, COUNT(*) AS n FROM customer_clv WHERE as_of_date = :d "
                                "GROUP BY clv_model", {"d": latest}) if wh.has_table("customer_clv") else None
        clv_run = wh.query_df("SELECT * FROM clv_runs WHERE as_of_date = :d", {"d": latest}) \
            if wh.has_table("clv_runs") else None
        support_rows = wh.scalar("SELECT COUNT(*) FROM stg_support_contacts WHERE as_of_date = :d", {"d": latest}) \
            if wh.has_table("stg_support_contacts") else 0
        from include.economics.build import model_and_published_moves

        moves = model_and_published_moves(wh, latest)
        pending = wh.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d "
                            "AND pending_segment_id IS NOT NULL", {"d": latest})
        econ = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d "
                           "ORDER BY profit DESC NULLS LAST, revenue DESC", {"d": latest}) \
            if wh.has_table("segment_economics") else None
        identity = wh.query_df("SELECT match_method, COUNT(*) AS records, COUNT(DISTINCT customer_key) AS customers "
                               "FROM identity_map WHERE as_of_date = :d GROUP BY match_method", {"d": latest})
        pushes = wh.query_df(
            "SELECT target, as_of_date, COUNT(*) AS batches, SUM(acknowledged) AS acknowledged, SUM(failed) AS failed "
            "FROM crm_push_log GROUP BY target, as_of_date ORDER BY target, as_of_date") \
            if wh.has_table("crm_push_log") else None
        reasons = wh.query_df(
            "SELECT source_table, reason, COUNT(*) AS n FROM quarantine WHERE as_of_date = :d "
            "GROUP BY source_table, reason ORDER BY source_table, reason", {"d": latest})
    # Cost to serve is known where economics found cost data (or, before economics ran, support contacts exist):
    # otherwise it is unknown, never a printed 0.
    cost_known = (bool(econ["cost_known"].fillna(False).all()) if econ is not None and len(econ)
                  else bool(support_rows))
    print(f"\nModel fit of {str(latest)[:10]} (segment_profiles, 365-day means; the published labels are counted "
          "in the economics below):")
    print(f"  {'id':>3} {'name':42s} {'customers':>9} {'share':>6} {'revenue':>9} {'orders':>6} "
          f"{'recency':>7} {'cost':>7} {'jaccard':>7}")
    for r in profiles.itertuples(index=False):
        cost = f"{r.cost_to_serve:>7.2f}" if cost_known and pd.notna(r.cost_to_serve) else f"{'unknown':>7}"
        jaccard = f"{r.jaccard:>7.2f}" if pd.notna(r.jaccard) else f"{'-':>7}"
        print(f"  {r.segment_id:>3} {r.segment_name:42s} {r.customers:>9,d} {r.customer_share:>6.1%} "
              f"{r.monetary:>9,.0f} {r.frequency:>6.1f} {r.recency_days:>6.0f}d {cost} {jaccard}")
    if not cost_known:
        print(f"  cost: {NO_COST}.")
    if gate is not None and len(gate):
        g = gate.iloc[0]
        status = "published" if g["published"] else f"NOT published (quality gate: {g['gate_reason']})"
        ari = "" if g["archetype_ari"] is None or g["archetype_ari"] != g["archetype_ari"] else \
            f", ARI vs planted archetypes {g['archetype_ari']:.2f}"
        print(f"  {g['algorithm']} k={g['k']}, silhouette {g['silhouette']:.2f}, bootstrap ARI "
              f"{g['bootstrap_ari']:.2f}{ari}; {status}")
    print("\nClassic RFM map (customers):")
    for r in rfm.itertuples(index=False):
        print(f"  {r.rfm_segment or '(not scored)':22s} {r.n:>7,d}")
    symbol, code = _currency(econ)
    run = clv_run.iloc[0] if clv_run is not None and len(clv_run) else None
    if run is not None and run["status"] == "unavailable":
        print(f"\nCLV not available: {run['reason']}")
        print(f"  candidates: {run['candidates']}. Segments, economics, report and CRM pushes went ahead without "
              "CLV; no customer has a CLV, P(alive) or churn risk this run.")
    elif run is not None:
        gini = "-" if pd.isna(run["normalised_gini"]) else f"{run['normalised_gini']:.2f}"
        error = "-" if pd.isna(run["holdout_error_pct"]) else f"{run['holdout_error_pct']:+.1f}%"
        margin = (f"assumed {100 * run['gross_margin']:.0f}% gross margin: set gross_margin"
                  if bool(run["gross_margin_assumed"]) else f"gross margin {100 * run['gross_margin']:.0f}%")
        print(f"\nCLV model: {run['clv_model']} + Gamma-Gamma, holdout error {error}, ranking on the holdout "
              f"(normalised Gini) {gini}; {margin}.")
        if not bool(run["check_passed"]):
            print(f"  {run['reason']}: the CLV figures below are NOT presented as true.")
    if clv is not None and len(clv) and (run is None or run["status"] != "unavailable"):
        model = ", ".join(str(m) for m in clv_model["clv_model"].dropna()) if clv_model is not None else ""
        print(f"\nCLV ({model or 'purchase model'} + Gamma-Gamma, chosen by holdout error), 365 days, {code}, "
              "mean per customer of the model fit's segments:")
        for r in clv.itertuples(index=False):
            flag = f"  <- {r.reason}" if r.flag else ""
            print(f"  {r.segment_id:>3} {r.segment_name:42s} {symbol}{r.mean_clv_365d:>9,.0f}  "
                  f"(band {r.mean_clv_365d_low:,.0f}-{r.mean_clv_365d_high:,.0f}, P(alive) {r.mean_p_alive:.2f}){flag}")
    if len(moves):
        moved = moves[moves["from_segment_id"] != moves["to_segment_id"]]
        print(f"\nMigration into {str(latest)[:10]} (customers of the previous published date): the model moved "
              f"{int(moved['model_customers'].sum()):,}, published labels moved {int(moved['published_customers'].sum()):,} "
              f"({pending:,} moves pending under hysteresis). Largest moves, model beside published:")
        top = moved.sort_values(["model_customers", "published_customers"], ascending=False).head(8)
        for r in top.itertuples(index=False):
            print(f"  {r.from_segment:>42s} -> {r.to_segment:42s} model {r.model_customers:>6,d}  "
                  f"published {r.published_customers:>6,d}")
    for r in identity.itertuples(index=False):
        print(f"\nIdentity ({r.match_method}): {r.records:,} source records -> {r.customers:,} customers")
    if econ is not None and len(econ):
        _print_economics(econ, symbol, code)
    if pushes is not None and len(pushes):
        print("\nCRM pushes (only changed labels; see crm_push_log, crm_outbox):")
        for r in pushes.itertuples(index=False):
            print(f"  {r.target:10s} {str(r.as_of_date)[:10]}  {int(r.batches):>3} batches  "
                  f"{int(r.acknowledged):>7,d} acknowledged  {int(r.failed):>4,d} rejected")
    with Warehouse(url) as wh:
        _print_lift(wh, dt.date.fromisoformat(str(latest)[:10]), symbol)
    print("\nQuarantined rows by reason:")
    for r in reasons.itertuples(index=False):
        print(f"  {r.source_table:22s} {r.reason:24s} {r.n:>6,d}")
    run_id = profiles["model_run_id"].iloc[0] if len(profiles) else "-"
    print(f"\nMLflow store: {mlflow_tracking_uri()} (artifacts: {data_dir() / 'mlflow' / 'artifacts'})")
    print(f"MLflow run of the latest date: {run_id}")
    from include.report.html import report_path
    from include.runtime.paths import reports_dir

    report = report_path(reports_dir(), dt.date.fromisoformat(str(latest)[:10]))
    print(f"Segment report: {report}{'' if report.exists() else ' (not written yet)'}")
    port = os.environ.get("AIRFLOW_PORT", "8080")
    mport = os.environ.get("MLFLOW_PORT", "5000")
    print(f"Airflow UI: http://127.0.0.1:{port}  MLflow UI: http://127.0.0.1:{mport}"
          f"  (after: bash scripts/ui.sh start)")


def _currency(econ) -> tuple[str, str]:
    """The run's currency symbol and code, as the economics stage stored them (settings' default otherwise)."""
    from include.runtime.settings import PipelineSettings

    if econ is not None and len(econ) and "currency_code" in econ and econ["currency_code"].notna().any():
        return str(econ["currency_symbol"].dropna().iloc[0]), str(econ["currency_code"].dropna().iloc[0])
    from include.runtime.currency import FALLBACK_CURRENCY, currency_symbol

    code = PipelineSettings.currency_code or FALLBACK_CURRENCY  # the settings default to the data's currency
    return PipelineSettings.currency_symbol or currency_symbol(code), code


def _print_economics(econ, symbol: str, code: str) -> None:
    """The segment economics table (published labels); cost and profit only where cost data existed."""
    from include.report.render import money, pct

    cost_known = bool(econ["cost_known"].fillna(False).all())
    assumed = "gross_margin_assumed" in econ and econ["gross_margin_assumed"].fillna(False).astype(bool).any()
    margin = (f"; assumed {100 * econ['gross_margin_rate'].iloc[0]:.0f}% gross margin: set gross_margin"
              if assumed else "")
    print(f"\nSegment economics (published labels, last 12 months, {code}{margin}):")
    print(f"  {'segment':42s} {'customers':>9} {'share':>6} {'revenue':>11} {'cost to serve':>13} "
          f"{'profit':>10} {'of profit':>9} {'repeat':>7} {'alive':>6} {'same label':>10}")
    for r in econ.itertuples(index=False):
        print(f"  {r.segment_name:42s} {r.customers:>9,d} {pct(r.customer_share):>6} {money(r.revenue, symbol):>11} "
              f"{money(r.cost_to_serve, symbol) if cost_known else 'unknown':>13} "
              f"{money(r.profit, symbol) if cost_known else 'unknown':>10} "
              f"{pct(r.profit_share) if cost_known else 'unknown':>9} "
              f"{pct(r.repeat_retention):>7} {pct(r.alive_share):>6} {pct(r.label_stability):>10}")
    if not cost_known:
        print(f"  Cost to serve and profit unknown: they {NO_COST}.")
    print("  repeat: of the segment's customers who ordered in the window before last (w = retention_window_days), "
          "the share who ordered again in the last w days; alive: share with CLV P(alive) >= 0.5; same label: "
          "share of last run's members published in the segment again (label stability, not customer retention).")



def _print_lift(wh, as_of_date: dt.date, symbol: str) -> None:
    """The treated-vs-holdout lift table of ``as_of_date`` (``segment_lift``), if the experiment ran."""
    if not wh.has_table("segment_lift"):
        return
    from include.runtime.warehouse import named_sql

    sql = named_sql("experiment.sql")
    lift = wh.query_df(sql["lift_of_date"], {"as_of_date": as_of_date})
    policy = wh.query_df(sql["policy_of_date"], {"as_of_date": as_of_date})
    if policy.empty:
        print("\nLift: the experiment stage has not run for this date")
        return
    if lift.empty:
        print("\nLift: the policy's first run (nothing treated yet): no treated-vs-holdout comparison")
        return
    p = policy.iloc[0]
    start = pd.Timestamp(lift["window_start"].iloc[0]).date()
    days = (as_of_date - start).days + 1
    print(f"\nLift, treated vs holdout (experiment {p['experiment_name']}, {p['holdout_share']:.0%} holdout, "
          f"playbook {p['policy_hash']} since {str(p['policy_start'])[:10]}; outcomes after the policy only: "
          f"{start} to {as_of_date}, {days} days):")
    width = max(7, int(lift["segment_name"].str.len().max()))  # whole names: two can share their first 34 letters
    print(f"  {'segment':{width}s} {'outcome':13s} {'treated':>9} {'holdout':>9} {'lift':>9} {'changed?':>10} "
          f"{'95% all segments at once':>24} {'95% this segment alone':>22} {'MDE':>8} {'n treated/holdout':>17}")

    def fmt(metric: str, value: float, signed: bool = False) -> str:
        if value is None or value != value:
            return "-"
        if metric == "retention":
            return f"{100 * value:+.1f}pt" if signed else f"{100 * value:.1f}%"
        return f"{value:+,.2f}" if signed else f"{'-' if value < 0 else ''}{symbol}{abs(value):,.2f}"

    def interval(metric: str, low: float, high: float) -> str:
        return f"[{fmt(metric, low, True)}, {fmt(metric, high, True)}]" if low == low and high == high else "-"

    from include.report.lift import decision_interval, verdict

    mde = lift["mde"] if "mde" in lift.columns else pd.Series(float("nan"), index=lift.index)
    older = False
    for r, m in zip(lift.itertuples(index=False), mde, strict=True):
        low, high, simultaneous = decision_interval(r)
        older |= not simultaneous and r.ci_low == r.ci_low
        said = verdict(r).replace("no evidence of change", "no").replace(" (this segment alone)", "*").replace("—", "-")
        mde_text = f"{100 * m:.1f}pt" if r.metric == "retention" and m == m else fmt(r.metric, m)
        print(f"  {r.segment_name:{width}s} {r.metric:13s} {fmt(r.metric, r.treated_mean):>9} "
              f"{fmt(r.metric, r.holdout_mean):>9} {fmt(r.metric, r.lift, True):>9} {said:>10} "
              f"{interval(r.metric, low, high) if simultaneous else '-':>24} "
              f"{interval(r.metric, r.ci_low, r.ci_high):>22} {mde_text:>8} "
              f"{int(r.n_treated):>8,d}/{int(r.n_holdout):<8,d}")
    print("  changed?: whether the lift's 95% interval for ALL segments at once excludes 0 (Bonferroni over the "
          "segments measured for that outcome: with 95% confidence every segment's true lift is inside its "
          "interval together, so a chance 'change' in one of several segments is not reported). The interval "
          "for this segment alone is narrower and right only for one segment chosen beforehand. '-': no "
          "interval (an arm under two customers, or too few customers with the outcome to measure it).")
    if older:
        print("  *: stored before simultaneous intervals were: decided by the per-segment interval.")
    print("  intention to treat: each customer in the segment and arm of its first date under the policy. Money: "
          "per customer over the whole window; retention: of those who ordered in the retention window before "
          "the policy, the share who ordered again in it. Lift CUPED-adjusted for the same outcome before the "
          "policy. MDE: smallest true lift the per-segment interval detects with 80% power (an interval "
          "including 0 cannot rule out an effect below it). Before/after views around a policy change are not randomised: see the report.")


if __name__ == "__main__":
    main()
