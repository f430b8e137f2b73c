#!/usr/bin/env bash
# Run the whole test suite (installs the pinned requirements first if needed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$ROOT/.pycache}"
# DuckDB 2.0 prints "nanobind: leaked ..." lines at interpreter exit: noise, not errors.
set +e
.venv/bin/python -m pytest "$@" 2> >(grep -v -E '^(nanobind: |  ?- leaked |  ?- \.\.\. skipped|See https://nanobind)' >&2)
status=$?
wait
exit $status
