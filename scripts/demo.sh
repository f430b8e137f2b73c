#!/usr/bin/env bash
# One command, end to end on embedded defaults: install, generate the demo data,
# run the customer_segmentation DAG through Airflow for a few weekly dates,
# then print where the results are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Seconds per phase, printed at the end (where the demo's time goes).
PHASES=""
phase_start=$(date +%s)
phase_done() { local now; now=$(date +%s); PHASES="$PHASES  $1: $(( now - phase_start )) s\n"; phase_start=$now; }
# SEGMENTATION_SKIP_SETUP=1: the environment is installed already (as for scripts/ui.sh).
[ "${SEGMENTATION_SKIP_SETUP:-}" = 1 ] || bash "$ROOT/scripts/setup.sh"
phase_done "setup check"
# The demo runs `dags test` (scripts/run_dates.py): SQLite metadata, even while scripts/ui.sh runs a stack.
export SEGMENTATION_METADATA_DB=sqlite
source "$ROOT/scripts/env.sh"
cd "$ROOT"
CUSTOMERS="${DEMO_CUSTOMERS:-5000}"
# Weekly run dates (Sundays); each run's as-of date is the Saturday before.
RUN_DATES="${DEMO_RUN_DATES:-2026-10-25 2026-11-01 2026-11-08 2026-11-15}"
start=$(date +%s)

echo "== 1/3 Airflow metadata database ($AIRFLOW_HOME)"
# Migrated once per pinned requirements (the Airflow version is pinned there): an up-to-date
# database skips the ~10 s `airflow db migrate`; a first migration runs beside the data generation.
MIGRATED="$AIRFLOW_HOME/.migrated-requirements.sha256"
want_migrated="$(sha256sum requirements.txt | cut -d' ' -f1)"
MIGRATE_PID=""
if [ -s "$AIRFLOW_HOME/airflow.db" ] && [ "$(cat "$MIGRATED" 2>/dev/null)" = "$want_migrated" ]; then
  echo "   up to date (requirements unchanged since the last migration)"
else
  airflow db migrate > "$SEGMENTATION_DATA_DIR/logs/db-migrate.log" 2>&1 &
  MIGRATE_PID=$!
fi
phase_done "airflow db migrate (started)"

echo "== 2/3 demo data: $CUSTOMERS persons into a fresh warehouse"
# A fresh warehouse each time: outputs of an earlier demo would otherwise sit beside
# the new data (MLflow keeps its history, so runs can be compared across demos).
rm -f "$SEGMENTATION_DATA_DIR/warehouse.duckdb" "$SEGMENTATION_DATA_DIR/warehouse.duckdb.wal"
# The playbook takes effect after the first run (as-of 2026-10-24): the generator plants its effects on the
# treated from the day after, so the lift table has a truth to recover (--policy-date; see docs/lift.md).
quiet_duckdb_exit python -m include.demo.generate --customers "$CUSTOMERS" --seed 7 --policy-date "${DEMO_POLICY_DATE:-2026-10-25}"
phase_done "generate"

if [ -n "$MIGRATE_PID" ]; then
  wait "$MIGRATE_PID" || { cat "$SEGMENTATION_DATA_DIR/logs/db-migrate.log"; exit 1; }
  echo "$want_migrated" > "$MIGRATED"
  phase_done "airflow db migrate (rest)"
fi

echo "== 3/3 customer_segmentation DAG runs: $RUN_DATES"
# A local webhook receiver (started and stopped here) gets the changed labels
# beside the warehouse outbox; the signing secret lives only in the connection.
DELIVERIES="$SEGMENTATION_DATA_DIR/webhook_deliveries.jsonl"
# The receiver keeps its state in <out>.sqlite: start it afresh with the fresh warehouse, else its
# report adds up the deliveries of every earlier demo.
rm -f "$DELIVERIES" "${DELIVERIES%.jsonl}.sqlite" "${DELIVERIES%.jsonl}.sqlite-wal" "${DELIVERIES%.jsonl}.sqlite-shm"
HOOK_PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
HOOK_SECRET="$(python -c 'import secrets; print(secrets.token_hex(16))')"
WEBHOOK_SECRET="$HOOK_SECRET" python scripts/webhook_receiver.py --port "$HOOK_PORT" --out "$DELIVERIES" &
HOOK_PID=$!
trap 'kill $HOOK_PID 2>/dev/null || true' EXIT
export AIRFLOW_CONN_CRM_WEBHOOK="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$HOOK_PORT/segments\", \"password\": \"$HOOK_SECRET\"}"
CONF='{"crm_targets": ["outbox", "webhook"]}'
# What `airflow dags test customer_segmentation <date>` runs, for every date in one process
# (scripts/run_dates.py): the DAG is parsed and the libraries imported once, not once per date, and the
# warehouse file stays open between tasks (they run one at a time).
log="$SEGMENTATION_DATA_DIR/logs/dag-runs.log"
echo "-- DAG.test() per date, one process (task logs: $log)"
# Progress lines come on descriptor 3 (to the terminal and the phase list); task logs go to the file.
if ! python scripts/run_dates.py customer_segmentation $RUN_DATES -c "$CONF" 3> >(tee "$SEGMENTATION_DATA_DIR/logs/dag-runs.progress") > "$log" 2>&1; then
  tail -n 60 "$log"; echo "demo: a DAG run failed; full log: $log" >&2; exit 1
fi
sleep 0.2  # let tee flush the last progress line
PHASES="$PHASES$(sed 's/^ */  run /' "$SEGMENTATION_DATA_DIR/logs/dag-runs.progress")\n"
phase_done "runs, in all"

quiet_duckdb_exit python -m include.report.summary
echo
quiet_duckdb_exit python scripts/webhook_receiver.py --report "$DELIVERIES"
kill $HOOK_PID 2>/dev/null || true
phase_done "summary"
echo
echo "Demo finished in $(( $(date +%s) - start )) s (after installation):"
printf "%b" "$PHASES"
echo "Start the Airflow and MLflow UIs:  bash scripts/ui.sh start   (stop: bash scripts/ui.sh stop)"
