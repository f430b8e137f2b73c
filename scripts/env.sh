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
# SQLite waits up to 60 s for another component's write (Python's default is 5 s,
# which `airflow backfill create` overran beside a busy scheduler: "database is locked").
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db?timeout=60}"
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
