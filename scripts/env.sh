# Environment of the embedded stack; sourced by the other scripts.
# Everything lives under $SEGMENTATION_DATA_DIR (default: <repo>/data).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export SEGMENTATION_DATA_DIR="${SEGMENTATION_DATA_DIR:-$ROOT/data}"
mkdir -p "$SEGMENTATION_DATA_DIR/airflow" "$SEGMENTATION_DATA_DIR/mlflow/artifacts" "$SEGMENTATION_DATA_DIR/logs"

export AIRFLOW_HOME="$SEGMENTATION_DATA_DIR/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-True}"
# The metadata database. The stack (scripts/ui.sh: scheduler, api-server, dag-processor) runs on the data
# folder's own PostgreSQL (scripts/metadata_db.py; Airflow documents SQLite as development-only, and beside a
# busy scheduler SQLite answered "database is locked"). `airflow dags test`, scripts/run_dates.py and the demo
# use SQLite. SEGMENTATION_METADATA_DB: postgres | sqlite | auto (default: PostgreSQL while the data folder's
# server runs, so CLI calls such as `airflow backfill create` reach the running stack). An explicit
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (a production Postgres) wins over all of them.
if [ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]; then
  case "${SEGMENTATION_METADATA_DB:-auto}" in
    postgres) use_postgres=1 ;;
    sqlite) use_postgres=0 ;;
    *) use_postgres=0
       if python3 "$ROOT/scripts/metadata_db.py" status > /dev/null 2>&1; then use_postgres=1; fi ;;
  esac
  if [ "$use_postgres" = 1 ]; then
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$(python3 "$ROOT/scripts/metadata_db.py" url)"
  else
    # SQLite waits up to 60 s for another writer (Python's default is 5 s).
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db?timeout=60"
  fi
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  unset use_postgres
fi
# Every server of the local stack listens on loopback only; the ports are configurable
# so that two stacks can run side by side (e.g. AIRFLOW_PORT=8081 AIRFLOW_LOG_PORT=8795 MLFLOW_PORT=5001).
export AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
# Task and trigger logs are served by one loopback log server (scripts/ui.sh starts it;
# Airflow's own log servers bind every interface, so the scheduler and triggerer skip theirs).
export AIRFLOW_LOG_PORT="${AIRFLOW_LOG_PORT:-8793}"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$AIRFLOW_LOG_PORT"
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$AIRFLOW_LOG_PORT"
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$AIRFLOW_PORT"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$AIRFLOW_PORT/execution/"
# A task's supervisor wakes at least every [workers] min_heartbeat_interval (default 5 s). When the task process
# has closed its sockets but is not yet reaped at the supervisor's last look, the supervisor notices the exit only
# at that next wake-up: the executor slot stays taken meanwhile, and a skipped task's end is recorded only then
# (measured: 5.1 s after the task's last log line for a third of the tasks, skipped pushes included). 1 s bounds
# that wait, for one heartbeat a second per running task.
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="${AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL:-1}"
# One JWT secret (64+ bytes) shared by every Airflow component, made once per data folder.
if [ ! -s "$AIRFLOW_HOME/jwt_secret" ]; then
  python3 -c 'import secrets; print(secrets.token_hex(48))' > "$AIRFLOW_HOME/jwt_secret"
  chmod 600 "$AIRFLOW_HOME/jwt_secret"
fi
AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret")"
export AIRFLOW__API_AUTH__JWT_SECRET

export MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$SEGMENTATION_DATA_DIR/mlflow/mlflow.db}"
export PYTHONPATH="$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
# Keep compiled bytecode between runs (Airflow recompiles everything otherwise).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$SEGMENTATION_DATA_DIR/.pycache}"
export PATH="$ROOT/.venv/bin:$PATH"

# DuckDB 2.0's Python binding (nanobind) lists its own module objects (the _duckdb types, functions and
# type constants) as "leaked" when the interpreter exits after duckdb_engine, a DuckDB-to-pandas result and
# MLflow's SQL store were all loaded: at exit none of the project's DuckDB connections or relations is open
# (checked with gc at atexit), so the cause is in DuckDB's module teardown, not in our objects. Not an
# error: the scripts drop exactly those lines from standard error (`quiet_duckdb_exit python ...`).
DUCKDB_EXIT_NOISE='^(nanobind: |  ?- leaked |  ?- \.\.\. skipped|See https://nanobind)'
quiet_duckdb_exit() {
  local status=0
  "$@" 2> >(grep --line-buffered -v -E "$DUCKDB_EXIT_NOISE" >&2) || status=$?
  return "$status"
}
