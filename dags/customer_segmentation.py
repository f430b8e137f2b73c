"""
### Customer segmentation (weekly)

Answers, every week: **who are our valuable customers, what do they share,
and what do we spend serving the unprofitable ones?**

| task | writes (rows keyed by `as_of_date`) |
|---|---|
| `apply_erasures` | erases the persons of `erase_source_ids` (every warehouse row; `erasure_log`, `erasure_list`; their CRM records cleared by the next pushes) and keeps erased persons out of the raw tables |
| `extract_validate` | `stg_*` staging tables, `quarantine` (bad rows + reason), `extract_log` |
| `resolve_identity` | `identity_map` (record → stable `customer_key`), `customers` (golden records); Splink model in MLflow |
| `build_features` | `customer_features` (RFM, engagement, support cost, traits) |
| `segment_customers` | the fit, fit-local and immutable: `segment_assignments`, `segment_profiles`, `segment_centroids`, `segmentation_runs` (bootstrap stability) |
| `fit_clv` | `clv_summary` (statistics in SQL), `customer_clv` (BG/NBD or MBG/NBD, chosen by holdout error among the fits with an interior maximum: P(alive), expected purchases, CLV 90/365 days), `clv_runs` (every run: model, holdout error, check, assumed margin; `unavailable` and why when no model fits: no CLV rows, the run goes on), `clv_backtest` (holdout predictions vs what customers did, by decile, normalised Gini) |
| `backtest_claims` | `claims_backtest`, `backtest_features`: the run's own logic as of D − `clv_holdout_days` on its own data; every name's value and lifecycle word and every action tier (account team, deprioritise, exclude) against what those customers did next |
| `label_segments` | `segment_labels` (the one owner of segment ids and names: fit segment → stable id, name, rule, standing, backtest verdict), `label_runs` (quality gate: stability and validity; claims withheld) |
| `crosscheck_clv` | `segment_clv_check`: the labels against CLV (value order vs mean CLV, lapsed names vs P(alive)); "could not check" without CLV |
| `publish_segments` | `customer_segments` (published labels + classic RFM map) |
| `track_migration` | `segment_transitions` (this and every later pair of snapshots), Markov view in MLflow |
| `build_economics` | `customer_economics`, `segment_economics` (revenue, margin, cost-to-serve or *unknown*, profit, CLV, repeat retention, alive share, label stability), `profit_concentration`, `customer_priority` (playbook action + churn-risk priority) |
| `compare_schemes` | `customer_legacy_labels`, `legacy_crosstab`, `scheme_variance`, `legacy_label_summary`: the business's own labels (optional `raw_legacy_labels`) against the segments and the RFM map |
| `run_experiment` | `customer_holdout` (stable holdout per customer and date; no action for it), `policy_runs` (playbook hash + actions in force), `segment_lift` (treated vs holdout per segment since the policy began, intention to treat, CUPED, 95% intervals for each segment alone and for all segments at once (Bonferroni; decides "changed"), and the minimum detectable effect) |
| `render_report` | `<data>/reports/segment_report_<date>.html` (self-contained), also an MLflow artifact |
| `push_<target>` | `crm_push_log`, `crm_push_state`, `crm_push_runs` (+ `crm_outbox`): changed labels to the CRM's own records (HubSpot/Salesforce by the ids of their exports loaded as identity records; nothing created), for the targets in `crm_targets`; clears for merged-away keys (`crm_on_merge`) and erased persons |
| `check_migration` | fails visibly when more than `alert_top_outflow` of the top segment left it (labels stay written) |
| `close_mlflow_run` | teardown: closes the run's MLflow run, `FAILED` when any task failed, else `FINISHED` |

**Assets**: `publish_segments`, `fit_clv` and `build_economics` update the assets
`customer_segments`, `customer_clv` and `segment_economics` (event `extra`:
`as_of_date`; for `customer_clv` also `status`, `unavailable` when no CLV model fits and the date has no
CLV rows), so other DAGs can be scheduled on them.

**Identity**: Splink (Fellegi–Sunter) links web, app and call-centre records on
names, email, phone, address, date of birth, device id and any `id_*` identifier.
A weekly run links only new and changed records against the previous run's
clusters (`identity_relink`), with that run's model, until the columns change,
the model is older than `identity_model_max_age_days` or `identity_retrain` is
ticked (then everyone is re-linked). Every run estimates its own precision and
recall without truth (`identity_runs.estimated_*`); below
`identity_min_estimated_precision` / `identity_min_estimated_recall` it is
degraded or fails (`identity_below_bar`). `identity_method=exact` runs the
email/phone baseline. Keys stay stable across runs (merges keep the oldest key,
the smaller part of a split gets a new one); merges and splits go to
`identity_changes`.

**Hysteresis**: a customer's published segment moves only after `hysteresis_runs`
consecutive runs in the new segment; `customer_segments` keeps both the raw and
the published label. Publishing a date republishes every later date, so
backfills and out-of-order runs give the same history as live weekly runs.

**Segmentation**: spectral segments (or k-prototypes, KMeans) on how customers buy while active plus
recency, tenure and lifetime purchase days; every segment's stability by bootstrap Jaccard (Hennig's
clusterboot). **Lifecycle**: every customer's own state (`customer_features.lifecycle_state`: new,
active, lapsing, lapsed against their own buying cadence). **Names** (`label_segments`) come from the
members' shares (a lifecycle word needs three in four members in that state), value words only for the
top third by revenue per customer, unique without numbers; the rule behind each name is stored in
`segment_labels`. **Actions** are chosen per customer from the segment's standing and the customer's
own state: only lapsed customers are deprioritised or excluded. **Backtest**: every claim the run makes
is checked on its own data as of D − `clv_holdout_days`; a claim that failed is withheld (a weaker name,
the playbook's next rule), loudly (log, MLflow tag `claims_withheld`, the rule text). **Quality gate**:
if a segment's Jaccard is below `min_jaccard` (stability) or the labels tell nobody apart (validity), the
new labels are not published and the previous ones are carried forward (the `label_segments` and
`publish_segments` logs and the MLflow tag `gate_failure` say which and why); with no earlier labels to
carry forward, `publish_segments` fails ("no labels published for <date>: <reason>"). Segment ids follow
earlier runs' segments by centroid matching.

**As-of date**: the `as_of_date` param when set, else the day before the run's
data interval end (the last complete day); any date can run (`airflow dags test
customer_segmentation 1998-06-28`). A misspelt or out-of-range setting in the
trigger's conf fails the first task, naming it. Every task replaces only that date's
rows, so re-running or backfilling a date is safe.

**Where to look**: the MLflow run tagged with this DAG run's id holds every
metric (row and quarantine counts, silhouette / Davies-Bouldin / cost per k
as nested runs, bootstrap Jaccard per segment) and the segment profiles. The warehouse is the
`segmentation_warehouse` connection (embedded default: `data/warehouse.duckdb`).

**Failures**: `extract_validate` fails naming the missing table or column, or
when the quarantined share of a table passes `max_bad_share` (the quarantine is
written first: `SELECT * FROM quarantine WHERE as_of_date = ...`).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, chain, dag, task, teardown

from include.runtime.settings import CRM_TARGETS, SETTINGS
from segmentation_providers.operators.push_segments import PushSegmentsOperator

#: Tables other DAGs can be scheduled on (``schedule=[Asset.ref(name="customer_segments")]``); each event's
#: ``extra`` carries the ``as_of_date`` it was written for.
OUTLETS = {
    stage: Asset(name=table, uri=f"x-segmentation://warehouse/{table}", group="customer_segmentation")
    for stage, table in (("publish_segments", "customer_segments"), ("fit_clv", "customer_clv"),
                         ("build_economics", "segment_economics"))
}


def _concurrent_tasks(task) -> int:
    """Tasks that may run beside this one, itself included: the executor's slots, capped by the DAG.

    The slots come from ``$SEGMENTATION_CONCURRENT_TASKS`` (``scripts/ui.sh`` sets it to the
    scheduler's parallelism for its workers; unset under ``airflow dags test``, which runs
    one task at a time). The DAG caps them: only stages that are neither upstream nor
    downstream of this one can run beside it (``fit_clv`` beside ``segment_customers``), so a
    stage alone in its part of the DAG gets every core.
    """
    import os

    from include.runtime.threads import CONCURRENCY_VARIABLE
    from include.stages import STAGES

    slots = int(os.environ.get(CONCURRENCY_VARIABLE) or 1)
    if slots <= 1:
        return 1
    related = task.get_flat_relative_ids(upstream=True) | task.get_flat_relative_ids(upstream=False)
    beside = {t for t in task.dag.task_ids if t in STAGES and t != task.task_id and t not in related}
    return min(slots, 1 + len(beside))


def _stage(name: str):
    """A task running the stage adapter ``include.stages.STAGES[name]`` for this DAG run's as-of date.

    The stage runs with its thread pools bounded to its share of the cores
    (:mod:`include.runtime.threads`) and stops within seconds on SIGTERM/SIGINT
    (:mod:`include.runtime.stops`: its transaction rolls back, the MLflow run is closed KILLED).
    A :class:`~include.runtime.errors.PipelineFinding` (bad data or settings, a failed gate)
    fails the task once; any other exception is taken as transient and retried.
    """
    from include.stages import STAGES

    if name not in STAGES:  # fail when the DAG file is parsed, not when the task runs
        raise ValueError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    outlets = [OUTLETS[name]] if name in OUTLETS else []

    @task(task_id=name, outlets=outlets)
    def run_stage(**context):
        from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTerminated

        from include.runtime import threads, tracking
        from include.runtime.errors import PipelineFinding
        from include.runtime.run import RunInfo
        from include.runtime.stops import StageTerminated, stoppable
        from include.stages import stage
        from segmentation_providers.hooks.warehouse import WarehouseHook

        budget = threads.task_thread_budget(_concurrent_tasks(context["task"]))
        try:
            with stoppable(), threads.limited(budget):
                run = RunInfo.from_context(context, WarehouseHook().get_sqlalchemy_url())
                adapter = stage(name)  # imports the stage's module before MLflow is imported beside it
                run.prefetch_mlflow_run()
                result = adapter(run)
        except PipelineFinding as exc:
            # Bad input or settings, a failed gate, a migration alert: findings, not transient errors. Fail once.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        except StageTerminated as exc:
            # Stopped on purpose: failed, not retried; the MLflow run must not stay RUNNING.
            dag_run = context["dag_run"]
            try:
                tracking.kill_parent_run(dag_run.dag_id, dag_run.run_id, name, str(exc))
            except Exception:  # noqa: BLE001 - the stop goes on; the teardown closes the run if it runs
                pass
            raise AirflowTaskTerminated(str(exc)) from exc
        for asset in outlets:
            # A stage that reports a status (fit_clv: 'unavailable' when no CLV model fits) says it to consumers.
            status = {"status": result["status"]} if isinstance(result, dict) and "status" in result else {}
            context["outlet_events"][asset].extra = {"as_of_date": run.as_of_date.isoformat(), **status}
        return result

    return run_stage()


@teardown
def close_mlflow_run(**context):
    """Close the DAG run's MLflow run: FAILED if any task failed, else FINISHED (runs after every task)."""
    from include.runtime import tracking

    dag_run, ti = context["dag_run"], context["ti"]
    # The Task SDK's view of this run's task states (a worker may not read the metadata DB itself).
    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    failed = sorted(t for t, state in states.items() if state in ("failed", "upstream_failed"))
    return tracking.close_parent_run(dag_run.dag_id, dag_run.run_id, failed)


@task(task_id="apply_erasures")
def apply_erasures(**context):
    """Erase the persons of the ``erase_source_ids`` param, then keep every erased person out of the raw tables."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.erasure import erase_requested
    from include.runtime.errors import PipelineFinding
    from segmentation_providers.hooks.warehouse import WarehouseHook

    ids = (context.get("params") or {}).get("erase_source_ids") or []
    try:
        return erase_requested(WarehouseHook().get_sqlalchemy_url(), ids,
                               requested_by=f"DAG run {context.get('run_id')}")
    except PipelineFinding as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


@dag(
    dag_id="customer_segmentation",
    schedule="@weekly",
    # Far in the past so that any as-of date can run (`airflow dags test customer_segmentation 1998-06-28`);
    # catchup=False keeps the scheduler from backfilling it.
    start_date=dt.datetime(1970, 1, 4, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["segmentation", "crm", "mlflow"],
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=5)},
    # Every param comes from the one declaration of the settings (include/runtime/settings.py).
    params={s.name: Param(**s.param_kwargs()) for s in SETTINGS},
)
def customer_segmentation():
    erasures = apply_erasures()
    extract = _stage("extract_validate")
    identity = _stage("resolve_identity")
    features = _stage("build_features")
    segments = _stage("segment_customers")
    backtest = _stage("backtest_claims")
    labels = _stage("label_segments")
    published = _stage("publish_segments")
    clv = _stage("fit_clv")
    crosscheck = _stage("crosscheck_clv")
    migration = _stage("track_migration")
    economics = _stage("build_economics")
    comparison = _stage("compare_schemes")
    experiment = _stage("run_experiment")
    report = _stage("render_report")
    check = _stage("check_migration")

    pushes = [
        PushSegmentsOperator(
            task_id=f"push_{target}", target=target, enabled_targets="{{ params.crm_targets }}",
            dry_run="{{ params.crm_dry_run }}", batch_size=100 if target == "hubspot" else 1000,
            on_merge="{{ params.crm_on_merge }}",
            # One push per target at a time, and a pool per target for its rate limit.
            pool=f"crm_{target}", max_active_tis_per_dag=1, retries=2, retry_delay=dt.timedelta(minutes=1),
        )
        for target in CRM_TARGETS
    ]

    chain(erasures, extract, identity, features, segments, backtest)
    features >> clv  # segmentation and CLV run side by side
    # One owner for ids and names: the labeller hears the fit, CLV (a witness) and the backtest (claims that
    # failed are withheld).
    [segments, clv, backtest] >> labels
    # After the labels, each task waits only for the tables it reads, so the second core takes the branches
    # (each stage writes only its own tables, and every table it reads is complete before it starts):
    # - the CLV cross-check reads the labels and CLV; it records them before they go out (report, pushes);
    # - migration reads the published labels (and check_migration migration's transitions);
    # - economics reads the published labels; the scheme comparison reads economics' per-customer profit,
    #   the experiment its priorities and actions.
    labels >> [crosscheck, published]
    published >> migration >> check
    published >> economics >> [experiment, comparison]
    # The report shows every table of the date. The holdout is recorded before the report and before any
    # push: holdouts never get the action; the pushes go out after the report.
    [crosscheck, migration, experiment, comparison] >> report
    report >> pushes
    [check, *pushes] >> close_mlflow_run()


customer_segmentation()
