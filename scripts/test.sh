#!/usr/bin/env bash
# Run the whole test suite (installs the pinned requirements first if needed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# The report test renders the HTML report in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "test: installing Debian's chromium for the report test"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
  else
    echo "test: chromium not found and no apt-get; the report rendering test will fail" >&2
  fi
fi
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$ROOT/.pycache}"
# DuckDB 2.0 prints "nanobind: leaked ..." lines at interpreter exit: noise from DuckDB's own module
# teardown, not errors (scripts/env.sh says why); dropped from standard error.
DUCKDB_EXIT_NOISE='^(nanobind: |  ?- leaked |  ?- \.\.\. skipped|See https://nanobind)'
set +e
# Two pytest-xdist workers (TEST_WORKERS=N to change, 0 for none): tests that share an expensive fixture
# stay on one worker (--dist loadgroup, tests/conftest.py), and the longest start first.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadgroup "$@" 2> >(grep -v -E "$DUCKDB_EXIT_NOISE" >&2)
status=$?
wait
exit $status
