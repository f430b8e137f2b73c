#!/usr/bin/env bash
# Start or stop the Airflow stack (api-server, scheduler, dag-processor, triggerer,
# a log server) and an MLflow server over the embedded stores. Every server listens
# on 127.0.0.1 only; ports: AIRFLOW_PORT (8080), AIRFLOW_LOG_PORT (8793), MLFLOW_PORT (5000).
# Airflow's metadata lives in the data folder's own PostgreSQL (scripts/metadata_db.py: a Unix
# socket, no port), started first and stopped last; set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to use
# another database, or SEGMENTATION_METADATA_DB=sqlite for SQLite (development only).
#   bash scripts/ui.sh start [component ...] | stop | status
# `start` with no components starts them all; tests start a subset, e.g.
#   bash scripts/ui.sh start api-server scheduler dag-processor
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The test harness runs this script from the test interpreter's environment (already installed).
[ "${SEGMENTATION_SKIP_SETUP:-}" = 1 ] || bash "$ROOT/scripts/setup.sh"
LOCAL_POSTGRES=0
if [ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ] && [ "${SEGMENTATION_METADATA_DB:-postgres}" != sqlite ]; then
  LOCAL_POSTGRES=1
  export SEGMENTATION_METADATA_DB=postgres
fi
source "$ROOT/scripts/env.sh"
cd "$ROOT"
RUN="$SEGMENTATION_DATA_DIR/run"
mkdir -p "$RUN"
COMPONENTS="api-server scheduler dag-processor triggerer log-server mlflow"
# Seconds a server may take to answer after its start (a loaded machine needs minutes).
WAIT_SECONDS="${UI_WAIT_SECONDS:-300}"

start_one() {
  local name="$1"; shift
  if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return
  fi
  setsid "$@" > "$SEGMENTATION_DATA_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  echo "$name started (pid $!, log data/logs/$name.log)"
}

wait_http() {
  local url="$1" name="$2"
  local deadline=$(( $(date +%s) + WAIT_SECONDS ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if python -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" "$url" 2>/dev/null; then
      echo "$name is up: $url"; return 0
    fi
    sleep 1
  done
  echo "$name did not answer at $url within $WAIT_SECONDS s; see data/logs/$name.log" >&2; return 1
}

wait_port() {
  local port="$1" name="$2"
  local deadline=$(( $(date +%s) + WAIT_SECONDS ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if python -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 10).close()" "$port" 2>/dev/null; then
      echo "$name is up: 127.0.0.1:$port"; return 0
    fi
    sleep 1
  done
  echo "$name did not listen on 127.0.0.1:$port within $WAIT_SECONDS s; see data/logs/$name.log" >&2; return 1
}

wanted() { case " $SELECTED " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

case "${1:-}" in
  start)
    shift
    SELECTED="${*:-$COMPONENTS}"
    for name in $SELECTED; do
      case " $COMPONENTS " in *" $name "*) ;; *) echo "unknown component $name (known: $COMPONENTS)" >&2; exit 2 ;; esac
    done
    if [ "$LOCAL_POSTGRES" = 1 ]; then
      python "$ROOT/scripts/metadata_db.py" start > "$SEGMENTATION_DATA_DIR/logs/postgres.log" 2>&1 \
        || { cat "$SEGMENTATION_DATA_DIR/logs/postgres.log"; exit 1; }
      echo "postgres started (metadata database, pid $(cat "$RUN/postgres.pid"), log data/postgres/server.log)"
    fi
    airflow db migrate > "$SEGMENTATION_DATA_DIR/logs/db-migrate.log" 2>&1 \
      || { tail -n 40 "$SEGMENTATION_DATA_DIR/logs/db-migrate.log"; exit 1; }
    # One pool per CRM target: the push tasks use them to respect each target's rate limit.
    airflow pools import "$ROOT/scripts/pools.json" > /dev/null
    wanted api-server && start_one api-server airflow api-server --host 127.0.0.1 --port "$AIRFLOW_PORT"
    # Airflow's built-in log servers bind every interface: skip them, serve the logs below on loopback.
    # The scheduler's LocalExecutor runs up to $AIRFLOW__CORE__PARALLELISM tasks side by side: each task's
    # thread pools get its share of the cores (include/runtime/threads.py).
    wanted scheduler && SEGMENTATION_CONCURRENT_TASKS="$AIRFLOW__CORE__PARALLELISM" \
      start_one scheduler airflow scheduler --skip-serve-logs
    wanted dag-processor && start_one dag-processor airflow dag-processor
    wanted triggerer && start_one triggerer airflow triggerer --skip-serve-logs
    # One log server for task and trigger logs (both ports point at it), read by the UI while a task runs.
    wanted log-server && start_one log-server python -c "import sys, uvicorn; uvicorn.run(
      'airflow.utils.serve_logs.log_server:get_app', factory=True, host='127.0.0.1', port=int(sys.argv[1]),
      log_level='warning', access_log=False)" "$AIRFLOW_LOG_PORT"
    wanted mlflow && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false start_one mlflow mlflow server \
      --backend-store-uri "$MLFLOW_TRACKING_URI" \
      --default-artifact-root "$SEGMENTATION_DATA_DIR/mlflow/artifacts" \
      --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
    wanted api-server && wait_http "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health" api-server
    wanted log-server && wait_port "$AIRFLOW_LOG_PORT" log-server
    wanted mlflow && wait_http "http://127.0.0.1:$MLFLOW_PORT/health" mlflow
    echo
    echo "Airflow UI: http://127.0.0.1:$AIRFLOW_PORT   (no login: simple auth manager, all admins)"
    wanted mlflow && echo "MLflow UI:  http://127.0.0.1:$MLFLOW_PORT"
    echo "Trigger a run: open customer_segmentation > Trigger (typed params form), or"
    echo "  source scripts/env.sh && airflow dags unpause customer_segmentation && airflow dags trigger customer_segmentation"
    echo "Backfill: source scripts/env.sh && airflow backfill create --dag-id customer_segmentation \\"
    echo "  --from-date 2026-10-01 --to-date 2026-11-15 --max-active-runs 1"
    ;;
  stop)
    for name in $COMPONENTS; do
      if [ -f "$RUN/$name.pid" ]; then
        pid="$(cat "$RUN/$name.pid")"
        # setsid made each component a process-group leader: stop its workers too.
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$RUN/$name.pid"; echo "$name stopped"
      fi
    done
    # Last: the components above are its clients.
    if [ -f "$RUN/postgres.pid" ] || python "$ROOT/scripts/metadata_db.py" status > /dev/null 2>&1; then
      python "$ROOT/scripts/metadata_db.py" stop
    fi
    ;;
  status)
    for name in $COMPONENTS; do
      if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
        echo "$name running (pid $(cat "$RUN/$name.pid"))"
      else
        echo "$name stopped"
      fi
    done
    python "$ROOT/scripts/metadata_db.py" status || true
    ;;
  *) echo "usage: bash scripts/ui.sh start|stop|status" >&2; exit 2 ;;
esac
