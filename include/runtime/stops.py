"""Clean stops: SIGTERM or SIGINT ends a running stage within seconds.

Airflow's task runner answers SIGTERM by calling the operator's ``on_kill`` and lets the task
run on: ``airflow dags test`` (every task in one process) ran to the end, or until SIGKILL,
and left its MLflow run RUNNING. Inside :func:`stoppable` the signal instead raises
:class:`StageTerminated` in the stage's (main) thread:

- the stage's open warehouse transaction rolls back as the exception unwinds (every stage
  writes a date's tables in one transaction), so no half-written date becomes visible;
- :class:`StageTerminated` derives from ``BaseException``, so no ``except Exception`` in a
  stage swallows it; the DAG's task wrapper turns it into Airflow's "task terminated" (failed,
  not retried) and closes the run's MLflow run as KILLED;
- the request is remembered for the rest of the process: a later stage of the same process
  (the next task of ``dags test``, the parallel branch) raises at its start instead of working,
  so the DAG run ends within seconds;
- a second signal ends the process at once (the signal's default action).

A signal between two stages is remembered by the handler left in place, which then does what
the handler before it did (Airflow's: ``on_kill``; a script's or pytest's: theirs), and the next
stage stops at its start. Signal handlers can only be installed from the main thread; elsewhere :func:`stoppable` does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: Signals that stop a stage.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: The first stop signal this process received while a stage could see it, else ``None``.
_requested: int | None = None


class StageTerminated(BaseException):  # noqa: N818 - Airflow's name for the same thing: AirflowTaskTerminated
    """The process was asked to stop (SIGTERM, SIGINT) while a stage ran or before it started."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: the stage's uncommitted writes were rolled back")


def stop_requested() -> int | None:
    """The stop signal this process received (and remembered), or ``None``."""
    return _requested


def _remember(signum: int) -> bool:
    """Record a stop request; on a repeated one end the process with the signal's default action."""
    global _requested
    if _requested is not None:
        _default_action(signum)
        return False
    _requested = signum
    log.warning("received %s: stopping", signal.Signals(signum).name)
    return True


def _default_action(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _raise_in_stage(signum: int, frame: object) -> None:
    if _remember(signum):
        raise StageTerminated(signum)


class _RememberThenChain:
    """The handler left in place after a stage: remember the signal, then do what the handler before did."""

    def __init__(self, previous: object) -> None:
        self.previous = previous.previous if isinstance(previous, _RememberThenChain) else previous

    def __call__(self, signum: int, frame: object) -> None:
        if not _remember(signum):
            return
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous in (signal.SIG_DFL, None):
            _default_action(signum)


@contextmanager
def stoppable() -> Iterator[None]:
    """Run a stage so that a stop signal raises :class:`StageTerminated` in it (main thread only).

    Raises :class:`StageTerminated` at once when this process was already asked to stop.
    On the way out the handlers found on the way in are put back behind one that remembers
    the signal first, so a signal between two stages is not lost (Airflow's own handler
    only calls ``on_kill``) and a process's own handling (pytest's, a script's) still runs.
    """
    if _requested is not None:
        raise StageTerminated(_requested)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_in_stage)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, _RememberThenChain(handler))
