"""No test Airflow stack outlives the process that started it (``tests/airflow_stack.py``).

A real stack takes about a minute to start (``airflow db migrate``, then the api-server), so
these tests run the same code path, :class:`AirflowStack` ``start``/``stop`` with its hooks
and watchdog, over a stand-in for ``scripts/ui.sh`` that starts what ``ui.sh`` starts in
the respect that matters here: each component ``setsid``-detached (its own session, out of
reach of the terminal's Ctrl-C and of signals to the test's process group), with children,
its pid in ``run/<component>.pid``. The owner is a child process (a plain script, or a real
pytest run with an xdist worker) that gets the signal; psutil then looks for survivors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.airflow_stack import ROOT, kill_stack_processes, stack_processes

#: Seconds a child pytest run may take to start its worker and stack (a loaded machine is slow to import).
STARTUP_DEADLINE = 600

#: A stand-in for ``scripts/ui.sh``: per component a detached session of a shell and two sleeps.
FAKE_UI_SCRIPT = """\
set -euo pipefail
RUN="$SEGMENTATION_DATA_DIR/run"
mkdir -p "$RUN"
case "$1" in
  start)
    shift
    for name in "$@"; do
      # The first without the marker in its environment, as a process that sets its title shows it.
      [ "$name" = "$1" ] && unmark=(env -u SEGMENTATION_TEST_STACK) || unmark=()
      "${unmark[@]}" setsid bash -c 'sleep 600 & sleep 600 & touch "$0"; wait' "$RUN/$name.up" \
        > /dev/null 2>&1 < /dev/null &
      echo $! > "$RUN/$name.pid"
    done
    for name in "$@"; do  # up once its children are (ui.sh waits for its servers)
      until [ -f "$RUN/$name.up" ]; do sleep 0.05; done
    done ;;
  stop)
    for pid_file in "$RUN"/*.pid; do
      [ -f "$pid_file" ] || continue
      kill -KILL -- "-$(cat "$pid_file")" 2>/dev/null || true
      rm -f "$pid_file"
    done ;;
esac
"""

#: The owner: starts a stack, prints its id and processes, waits to be signalled.
OWNER_SCRIPT = """\
import signal, sys, time
from pathlib import Path
from tests.airflow_stack import AirflowStack

if sys.argv[3] == "own-handler":  # a handler of the owner's own, which ours must call after stopping the stack
    def on_term(signum, frame):
        print("own handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
stack = AirflowStack(Path(sys.argv[1]), components=("api-server", "scheduler"), script=Path(sys.argv[2]))
stack.start()
print(stack.id, *[p.pid for p in stack.processes()], flush=True)
time.sleep(600)
"""

#: A test a real pytest run (one xdist worker) runs: it starts a stack and reports it, then waits.
XDIST_TEST = """\
import os, time
from pathlib import Path
import tests.conftest  # the suite's xdist set-up (an orphaned worker ends itself)
from tests.airflow_stack import AirflowStack

def test_holds_a_stack(tmp_path):
    with AirflowStack(tmp_path / "stack", components=("api-server", "scheduler"),
                      script=Path(os.environ["FAKE_UI_SCRIPT"])) as stack:
        report = Path(os.environ["STACK_REPORT"])
        pids = [os.getpid(), *[p.pid for p in stack.processes()]]
        report.with_suffix(".tmp").write_text(" ".join([stack.id, str(stack.run_dir), *map(str, pids)]))
        report.with_suffix(".tmp").replace(report)
        time.sleep(600)
"""


def _child_env() -> dict[str, str]:
    # Not this run's xdist identity: the child is a run (or process) of its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SEGMENTATION_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _assert_stack_gone(stack_id: str, run_dir: Path, pids: list[int], within: float) -> None:
    deadline = time.monotonic() + within
    while (_alive(pids) or stack_processes(stack_id, run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = {pid: psutil.Process(pid).cmdline() for pid in _alive(pids)}
    found = stack_processes(stack_id, run_dir)
    for pid in survivors:  # a failed test leaves nothing behind either
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    kill_stack_processes(stack_id, run_dir, grace=1)
    assert not survivors, f"stack processes survived: {survivors}"
    assert not found


@pytest.fixture
def fake_ui_script(tmp_path) -> Path:
    path = tmp_path / "fake_ui.sh"
    path.write_text(FAKE_UI_SCRIPT)
    return path


@pytest.mark.parametrize(("signum", "mode", "exit_code"), [
    (signal.SIGTERM, "default", -signal.SIGTERM),  # the CI timeout: the owner still dies of SIGTERM
    (signal.SIGTERM, "own-handler", 3),  # the handler ours replaced runs after the stack stopped
    (signal.SIGINT, "default", -signal.SIGINT),  # Ctrl-C: KeyboardInterrupt, as without our handler
    (signal.SIGKILL, "default", -signal.SIGKILL),  # no handler can run: the watchdog stops the stack
], ids=["sigterm", "sigterm-chained", "sigint", "sigkill"])
def test_signalled_owner_leaves_no_stack_process(tmp_path, fake_ui_script, signum, mode, exit_code):
    run_dir = tmp_path / "stack" / "run"
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(tmp_path / "stack"), str(fake_ui_script), mode],
                             cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stack_id, *pids = owner.stdout.readline().split()
        pids = [int(p) for p in pids]
        # Two components, each a session leader with two sleeps under it; one found only by its session.
        assert len(pids) == 6
        assert set(pids) == {p.pid for p in stack_processes(stack_id, run_dir)}
        assert len({p.pid for p in stack_processes(stack_id)} & set(pids)) == 3
        assert {os.getsid(pid) for pid in pids} != {os.getsid(owner.pid)}
        owner.send_signal(signum)
        out, err = owner.communicate(timeout=120)
    finally:
        owner.kill()
    assert owner.returncode == exit_code, err
    if mode == "own-handler":
        assert "own handler ran" in out
    _assert_stack_gone(stack_id, run_dir, pids, within=15 if signum == signal.SIGKILL else 1)


def test_sigterm_to_pytest_with_an_xdist_worker_leaves_no_stack_process(tmp_path, fake_ui_script):
    """SIGTERM to the controller alone of a real ``pytest -n 1`` whose worker holds a stack.

    The worker gets no signal and would run its test on; it must end, and the stack with it.
    """
    test_file = tmp_path / "test_holder.py"
    test_file.write_text(textwrap.dedent(XDIST_TEST))
    report = tmp_path / "stack.txt"
    (tmp_path / "tmp").mkdir()  # what the killed run leaves (its tests/conftest.py run folder) goes with tmp_path
    env = {**_child_env(), "FAKE_UI_SCRIPT": str(fake_ui_script), "STACK_REPORT": str(report),
           "TMPDIR": str(tmp_path / "tmp")}
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "no:cacheprovider",
                            "--rootdir", str(tmp_path), str(test_file)],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Starting pytest, an xdist worker and the stack took over 60 s at load 15: wait on the report, generously.
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not report.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert report.exists(), (run.communicate(timeout=60)[0] if run.poll() is not None
                                 else f"no stack in {STARTUP_DEADLINE} s")
        stack_id, run_dir, *pids = report.read_text().split()
        pids = [int(p) for p in pids]
        assert len(pids) == 7  # the worker and the stack's six
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=120)
    finally:
        run.kill()
    _assert_stack_gone(stack_id, Path(run_dir), pids, within=15)
