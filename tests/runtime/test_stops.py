"""SIGTERM ends a running stage within seconds and rolls its writes back (``include/runtime/stops.py``).

The process under test is a child: it opens a warehouse transaction inside ``stoppable()``,
writes a row, says so, and works on; the test sends SIGTERM and reads what the child did.
The end-to-end case (a DAG run stopped mid-stage) is in ``tests/dags/test_stops.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

CHILD = """\
import sys, time
from include.runtime.stops import StageTerminated, stoppable, stop_requested
from include.runtime.warehouse import Warehouse

url = sys.argv[1]
with Warehouse(url) as wh:
    wh.run_script("CREATE TABLE IF NOT EXISTS t (a INTEGER)")
    try:
        with stoppable(), wh.transaction() as tx:
            tx.run_script("INSERT INTO t VALUES (1)")
            print("writing", flush=True)
            while True:  # a stage at work: Python between native calls
                tx.scalar("SELECT COUNT(*) FROM range(100000)")
                time.sleep(0.01)
    except StageTerminated as exc:
        print(f"terminated: {exc}", flush=True)
    try:
        with stoppable():
            print("second stage ran", flush=True)
    except StageTerminated:
        print("second stage refused", flush=True)
    print("rows", wh.scalar("SELECT COUNT(*) FROM t"), "requested", stop_requested(), flush=True)
"""


def test_sigterm_ends_the_stage_rolls_back_and_stops_later_stages(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, url], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        time.sleep(0.5)
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
        ended_after = time.monotonic() - sent
    finally:
        child.kill()
    assert child.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("terminated: stopped by SIGTERM"), out
    assert lines[1] == "second stage refused"
    assert lines[2] == f"rows 0 requested {int(signal.SIGTERM)}"  # the stage's insert was rolled back
    assert ended_after < 30, ended_after


def test_a_signal_between_stages_runs_the_previous_handler_after_remembering_it(tmp_path):
    script = """\
import os, signal, sys
from include.runtime import stops
signal.signal(signal.SIGTERM, lambda s, f: print("own handler", stops.stop_requested() == s, flush=True))
with stops.stoppable():
    pass
os.kill(os.getpid(), signal.SIGTERM)
print("after", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["own", "handler", "True", "after"]
