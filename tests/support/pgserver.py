"""A throwaway PostgreSQL server for tests and benchmarks.

Starts the Debian server binaries (`/usr/lib/postgresql/<version>/bin`) in a temporary
folder, on a free loopback port, with trust authentication and durability off (the data
is thrown away). PostgreSQL refuses to run as root, so under root (CI) the server runs
as the `postgres` user that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailableError(RuntimeError):
    """The server binaries or the user to run them are missing."""


def find_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/*/bin` holding `pg_ctl` (or $PG_BIN_DIR)."""
    if env := os.environ.get("PG_BIN_DIR"):
        return Path(env)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailableError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install the Debian "
            "package postgresql (`make test` does as root: scripts/test-prerequisites) or set "
            "PG_BIN_DIR"
        )
    return found[-1].parent


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One server; `url(database)` gives a SQLAlchemy URL for psycopg 3."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable  # keep PostgreSQL's default fsync/commit settings (benchmarks)
        self.bin_dir = find_bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="readmission-pg-"))
        self.data = self.root / "data"
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailableError(
                    "running as root and no `postgres` user exists"
                ) from exc
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True)

    def start(self) -> PostgresServer:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            self.user,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self._pg_ctl_start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


@contextlib.contextmanager
def running_server(durable: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(durable=durable).start()
    try:
        yield server
    finally:
        server.cleanup()
