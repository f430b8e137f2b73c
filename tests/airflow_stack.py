"""A real Airflow stack for tests: ``scripts/ui.sh`` in a fresh data folder, on free loopback ports.

The stack is started by the same script operators use (``bash scripts/ui.sh start``), so a
test of it also tests the script's settings: loopback servers, configurable ports, the
metadata in the data folder's own PostgreSQL (``scripts/metadata_db.py``), the LocalExecutor.
The environment is rebuilt from scratch, without the ``AIRFLOW_*``/``MLFLOW_*`` variables
``tests/conftest.py`` sets for in-process tests.

Every wait is on a state with a generous deadline, never a fixed read: on a machine at
load 15 the api-server took over 30 s to answer a GET, so :meth:`AirflowStack.api` tries
again (timeouts, refused connections, 5xx) until :data:`API_DEADLINE` has passed.

No stack outlives the process that started it. ``ui.sh`` starts every component with
``setsid`` (its own session), so neither Ctrl-C at the terminal nor a CI timeout's SIGTERM
to the test processes reaches them, and pytest runs no fixture teardown when SIGTERM kills
it. So every process of a stack carries the stack's id in ``SEGMENTATION_TEST_STACK``
(:data:`STACK_MARKER`), whatever session it moved to, or is in the session of a component
(:func:`stack_processes`), and three things stop them:

* SIGINT and SIGTERM handlers in the starting process (the pytest process or xdist worker),
  which stop its stacks and then chain to the handler they replaced;
* an ``atexit`` hook, for an exit without a signal;
* a watchdog process per stack, in a session of its own, which stops the stack when the
  starting process is gone (SIGKILL, ``os._exit``), when an xdist worker's controller is
  gone (the orphaned worker would run on), or when the stack is stopped normally (then it
  sweeps up stragglers).

``tests/conftest.py`` also ends an xdist worker whose controller is gone, with SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "customer_segmentation"
#: Generated persons in the shared stack's warehouse, and the end of their history.
STACK_PERSONS = 300
STACK_DATA_END = dt.date(2026, 11, 14)
#: Settings for runs over the small stack warehouse: three k candidates, four bootstrap
#: refits, the quality gate off (300 persons), the outbox as the only CRM target.
SMALL_DATA_CONF = {"k_min": 3, "k_max": 5, "n_init": 2, "silhouette_sample": 500, "n_bootstrap": 4,
                   "min_jaccard": 0.0, "crm_targets": ["outbox"]}
UI_SCRIPT = ROOT / "scripts" / "ui.sh"
_DROPPED_PREFIXES = ("AIRFLOW_", "MLFLOW_", "SEGMENTATION_")
_TERMINAL_RUN_STATES = {"success", "failed"}
#: Environment variable every process of a stack inherits; its value is the stack's id.
STACK_MARKER = "SEGMENTATION_TEST_STACK"
#: Seconds a stack's processes get to end after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 5.0
#: Signals on which the starting process stops its stacks before its previous handler runs.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds one REST call may keep trying (each try waits up to :data:`API_TRY_TIMEOUT` s for an answer).
API_DEADLINE = 600.0
API_TRY_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StackError(RuntimeError):
    """The stack did not start, or a run did not finish in time; the message carries the logs' tails."""


def stack_processes(stack_id: str, run_dir: Path | None = None) -> list[psutil.Process]:
    """Every live process of a stack, with its children.

    A process is the stack's when it carries ``STACK_MARKER=stack_id`` in its environment, or
    belongs to the session of a component in ``run_dir`` (``ui.sh`` writes ``<component>.pid``
    there; ``setsid`` made each one a session leader). Both, because a process that sets its
    title (the api-server does) overwrites the environment that ``/proc`` shows, and a
    process may start a session of its own. Linux reuses no pid while it is a session's id.
    """
    sessions = set()
    for pid_file in (run_dir.glob("*.pid") if run_dir is not None else ()):
        with contextlib.suppress(ValueError, OSError):
            sessions.add(int(pid_file.read_text().strip()))
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["environ"]):
        if proc.pid == os.getpid():
            continue
        environ = proc.info.get("environ") or {}  # None for other users' processes and zombies
        try:
            mine = environ.get(STACK_MARKER) == stack_id or (bool(sessions) and os.getsid(proc.pid) in sessions)
        except OSError:
            continue
        if mine:
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                found.update({child.pid: child for child in proc.children(recursive=True)})
    return [proc for proc in found.values() if proc.pid != os.getpid()]


def kill_stack_processes(stack_id: str, run_dir: Path | None = None, grace: float = STOP_GRACE_SECONDS) -> int:
    """SIGTERM every process of the stack, SIGKILL what is left after ``grace`` s; return how many there were.

    Scans again until a scan finds none: a process may start another while the first ones end
    (``ui.sh start`` launching the next component, the scheduler a task). Then removes the
    components' pid files, as ``ui.sh stop`` does.
    """
    ended: set[int] = set()
    for _ in range(10):
        procs = stack_processes(stack_id, run_dir)
        if not procs:
            # Their sessions are empty now, so their pids may be reused: a later sweep must not read them.
            for pid_file in (run_dir.glob("*.pid") if run_dir is not None else ()):
                pid_file.unlink(missing_ok=True)
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=grace)
        ended.update(proc.pid for proc in procs)
    return len(ended)


#: Stacks started by this process and not stopped yet, by id.
_LIVE_STACKS: dict[str, AirflowStack] = {}
#: The SIGINT/SIGTERM handlers ours replaced, called after the stacks stopped.
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_GUARD_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def stop_live_stacks() -> None:
    """Kill the processes of every stack this process started and has not stopped (signal and exit path)."""
    for stack in list(_LIVE_STACKS.values()):
        # A fork of the starting process inherits the hooks and the registry, not the stacks.
        if stack._owner_pid == os.getpid():
            kill_stack_processes(stack.id, stack.run_dir)
            stack._drop_metadata_db()
            stack._release_watchdog()


def _stop_stacks_on_signal(signum: int, frame: Any) -> None:
    stop_live_stacks()
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        # The default action (end the process) with the default handler, as if ours had not been there.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_stop_hooks() -> None:
    """Once per process: the ``atexit`` hook and, from the main thread, the signal handlers."""
    global _HOOKS_INSTALLED
    with _GUARD_LOCK:
        if _HOOKS_INSTALLED:
            return
        _HOOKS_INSTALLED = True
        atexit.register(stop_live_stacks)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set there; the watchdog still stops the stack
        for signum in STOP_SIGNALS:
            _PREVIOUS_HANDLERS[signum] = signal.getsignal(signum)
            signal.signal(signum, _stop_stacks_on_signal)


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _watch(stack_id: str, run_dir: Path, owner_pid: int, controller_pid: int | None) -> None:
    """The watchdog: wait until the owner closes our stdin or dies, then kill the stack's processes.

    ``controller_pid``: an xdist worker's controller. A worker whose controller was killed runs
    on (its test keeps the main thread), so the controller's end also ends the stack.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    controller = None
    if controller_pid:
        with contextlib.suppress(psutil.NoSuchProcess):
            controller = psutil.Process(controller_pid)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 0.5)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break  # EOF: the owner stopped the stack, or died
        if os.getppid() != owner_pid:
            break  # reparented: the owner died (a fork of it may still hold the pipe open)
        if controller is not None and _gone(controller):
            break
    kill_stack_processes(stack_id, run_dir)


class AirflowStack:
    """Airflow components started by ``scripts/ui.sh`` over a fresh data folder.

    Parameters
    ----------
    data_dir
        The stack's ``SEGMENTATION_DATA_DIR`` (Airflow home, warehouse, MLflow store, logs).
    components
        Components of ``scripts/ui.sh`` to start.
    parallelism
        ``[core] parallelism``: task processes the LocalExecutor runs side by side.
    env
        Extra environment variables for every component and CLI call.
    script
        The start/stop script (``scripts/ui.sh``; the cleanup test passes a cheap stand-in).
    """

    def __init__(self, data_dir: Path, components: Iterable[str] = ("api-server", "scheduler", "dag-processor"),
                 parallelism: int = 2, env: dict[str, str] | None = None, script: Path = UI_SCRIPT) -> None:
        self.id = uuid.uuid4().hex
        self.script = Path(script)
        self.data_dir = Path(data_dir)
        #: Where ``ui.sh`` writes each component's pid.
        self.run_dir = self.data_dir / "run"
        self.components = tuple(components)
        self.port = free_port()
        self.log_port = free_port()
        self.mlflow_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(_DROPPED_PREFIXES) and k not in ("WAREHOUSE_URL", "PYTHONPATH")}
        self.env.update({
            "SEGMENTATION_DATA_DIR": str(self.data_dir),
            "SEGMENTATION_SKIP_SETUP": "1",
            "AIRFLOW_PORT": str(self.port),
            "AIRFLOW_LOG_PORT": str(self.log_port),
            "MLFLOW_PORT": str(self.mlflow_port),
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            # The interpreter running the tests provides airflow, mlflow and python.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
            STACK_MARKER: self.id,
        })
        self._token: str | None = None
        self._watchdog: subprocess.Popen | None = None
        self._owner_pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 900) -> None:
        """Start the components and wait for the api-server's health endpoint (``ui.sh`` waits).

        The stop hooks and the watchdog are in place before the first component starts.
        """
        self._guard()
        try:
            out = subprocess.run(["bash", str(self.script), "start", *self.components], env=self.env,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise StackError(f"ui.sh start took over {timeout} s\n{self.logs_tail()}") from exc
        if out.returncode != 0:
            self.stop()
            raise StackError(f"ui.sh start failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{self.logs_tail()}")

    def stop(self) -> None:
        """Stop every component (and its task processes); safe to call twice.

        ``ui.sh stop`` ends each component's process group; the watchdog then ends whatever
        carries the stack's marker outside them.
        """
        subprocess.run(["bash", str(self.script), "stop"], env=self.env, capture_output=True, timeout=120)
        self._drop_metadata_db()
        self._release_watchdog()

    def _drop_metadata_db(self) -> None:
        """Delete the stack's PostgreSQL files (as root they live in ``/tmp``, outside the data folder)."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([sys.executable, str(ROOT / "scripts" / "metadata_db.py"), "drop"], env=self.env,
                           capture_output=True, timeout=120)

    def _guard(self) -> None:
        """Register the stack for the signal and exit hooks and start its watchdog."""
        _install_stop_hooks()
        self._owner_pid = os.getpid()
        _LIVE_STACKS[self.id] = self
        if self._watchdog is None:
            # Its own session: the terminal's Ctrl-C and a signal to the test's process group pass it by.
            controller = str(os.getppid()) if os.environ.get("PYTEST_XDIST_WORKER") else ""
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "tests.airflow_stack", "--watch", self.id, str(self.run_dir), str(os.getpid()),
                 controller],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != STACK_MARKER})

    def _release_watchdog(self) -> None:
        """Close the watchdog's pipe (it sweeps up stragglers, then ends) and wait for it."""
        _LIVE_STACKS.pop(self.id, None)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stdin.close()
            try:
                watchdog.wait(timeout=4 * STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                watchdog.kill()

    def logs_tail(self, lines: int = 30) -> str:
        """The last lines of every component's log, for failure messages."""
        parts = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def processes(self) -> list[psutil.Process]:
        """The running components and their children (task processes, log servers)."""
        found = []
        for pid_file in self.run_dir.glob("*.pid"):
            with contextlib.suppress(psutil.NoSuchProcess, ValueError):
                leader = psutil.Process(int(pid_file.read_text().strip()))
                found += [leader, *leader.children(recursive=True)]
        return found

    def listening_addresses(self) -> set[tuple[str, int]]:
        """``(ip, port)`` of every TCP socket the stack's processes listen on."""
        addresses = set()
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        addresses.add((conn.laddr.ip, conn.laddr.port))
        return addresses

    # -- CLI and REST ------------------------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` with the stack's environment (``scripts/env.sh``: the stack's metadata database)."""
        script = 'source "$0" && exec airflow "$@"'
        return subprocess.run(["bash", "-c", script, str(ROOT / "scripts" / "env.sh"), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def metadata_url(self) -> str:
        """The SQLAlchemy URL of the stack's metadata database, as ``scripts/env.sh`` gives it to the components."""
        script = 'source "$0" > /dev/null && printf %s "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"'
        out = subprocess.run(["bash", "-c", script, str(ROOT / "scripts" / "env.sh")],
                             env={**self.env, "SEGMENTATION_METADATA_DB": "postgres"},
                             capture_output=True, text=True, timeout=120, check=True)
        return out.stdout

    def _request(self, method: str, url: str, deadline: float, **kwargs: Any) -> requests.Response:
        """One HTTP call, tried again on a timeout, a refused connection or a 5xx until ``deadline`` (monotonic)."""
        while True:
            try:
                response = requests.request(method, url, timeout=API_TRY_TIMEOUT, **kwargs)
                if response.status_code < 500:
                    return response
                problem = f"{response.status_code} {response.text[:500]}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = repr(exc)
            if time.monotonic() > deadline:
                raise StackError(f"{method} {url}: no answer within the deadline; last: {problem}\n{self.logs_tail()}")
            time.sleep(2)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (``/api/v2/...``) with a JWT; return the decoded JSON body.

        A slow or busy api-server is waited for (up to :data:`API_DEADLINE` s); an answer
        with a 4xx status is an error at once. Only idempotent calls are tried again: a POST
        that timed out might have been carried out, so it is not sent twice.
        """
        deadline = time.monotonic() + API_DEADLINE
        if self._token is None:
            # With simple_auth_manager_all_admins a token needs no credentials.
            response = self._request("GET", f"{self.base_url}/auth/token", deadline)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self._token}"}
        if method.upper() == "POST":
            response = requests.request(method, url, timeout=API_DEADLINE, headers=headers, **kwargs)
        else:
            response = self._request(method, url, deadline, headers=headers, **kwargs)
        if not response.ok:
            raise StackError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 600) -> dict:
        """Wait until the dag-processor has parsed ``dag_id``; fail on an import error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            errors = self.api("GET", "importErrors")["import_errors"]
            if errors:
                raise StackError("DAG import errors: " + json.dumps(errors, indent=1)[:4000])
            with contextlib.suppress(StackError):
                return self.api("GET", f"dags/{dag_id}")
            time.sleep(2)
        raise StackError(f"DAG {dag_id} not parsed within {timeout} s\n{self.logs_tail()}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict, logical_date: str | None = None) -> str:
        """Trigger a DAG run through the REST API; return its run id."""
        run = self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf})
        return run["dag_run_id"]

    def dag_runs(self, dag_id: str, **filters: Any) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100, **filters})["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Wait until a DAG run succeeded or failed; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in _TERMINAL_RUN_STATES:
                return run
            time.sleep(3)
        raise StackError(f"run {run_id} not finished within {timeout} s: {self.task_states(dag_id, run_id)}\n"
                         f"{self.logs_tail()}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        params={"limit": 100})["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, tuple[str | None, int]]:
        """``task_id -> (state, try_number)`` of one run."""
        return {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in self.task_instances(dag_id, run_id)}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task attempt's log as text (for failure messages)."""
        with contextlib.suppress(StackError, requests.RequestException):
            body = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}")
            return "\n".join(str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in body["content"])
        return "(log not available)"


@pytest.fixture(scope="session")
def segmentation_stack(tmp_path_factory):
    """One stack for the session, shared between modules (``tests/conftest.py`` loads this file as a plugin).

    Its warehouse holds ``STACK_PERSONS`` generated persons; the DAG is parsed and unpaused.
    Cron scheduling is off: the scheduler would otherwise start the latest weekly run
    (with the default, full-size settings) as soon as the DAG is unpaused; triggered and
    backfill runs still run.
    """
    from include.demo.generate import write_demo_data

    data_dir = tmp_path_factory.mktemp("scheduler-stack")
    write_demo_data(f"duckdb:///{data_dir / 'warehouse.duckdb'}", STACK_PERSONS, seed=5, end_date=STACK_DATA_END,
                    show_progress=False)
    stack = AirflowStack(data_dir, components=("api-server", "scheduler", "dag-processor", "log-server"),
                         env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    with stack:
        stack.wait_for_dag(DAG_ID)
        stack.unpause(DAG_ID)
        yield stack


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if sys.argv[5:6] != [""] else None)
