"""
A throwaway PostgreSQL server for the tests: Debian's C{postgresql}
package provides C{initdb} and C{pg_ctl}; L{PostgresServer} makes a
cluster in a temporary folder, starts it on a free port of 127.0.0.1 (and a
Unix socket in that folder), hands out one fresh database per test, and
removes everything when stopped.

C{initdb} refuses to run as root: when the tests run as root (CI does), the
server's commands run as the C{postgres} system user the package creates,
in a folder that user owns.

Tests that need a server are skipped when the binaries are missing, unless
C{LUNAROUTE_REQUIRE_POSTGRES} is set (C{scripts/run-tests} sets it in CI
after installing the package), in which case they fail instead.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from typing import Any

from lunaroute.testing.helpers import free_port

__all__ = ["REQUIRE_ENV", "PostgresServer", "find_bin_dir", "postgres_missing_reason"]

REQUIRE_ENV = "LUNAROUTE_REQUIRE_POSTGRES"


def find_bin_dir() -> str | None:
    """The folder holding C{initdb} and C{pg_ctl}, or C{None}."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return os.path.dirname(on_path)
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")) and os.path.exists(os.path.join(candidate, "pg_ctl")):
            return candidate
    return None


def postgres_missing_reason() -> str | None:
    """Why no test server can start here (C{None} when one can)."""
    if find_bin_dir() is None:
        return "PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg / psycopg_pool are not installed (pip install lunaroute[postgres])"
    return None


class PostgresServer:
    """
    One PostgreSQL cluster for a test session.

    @ivar port: its TCP port on 127.0.0.1.
    """

    def __init__(self, bin_dir: str | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.bin_dir = found
        self.as_postgres = os.geteuid() == 0
        self.base = tempfile.mkdtemp(prefix="lunaroute-pg-")
        self.data = os.path.join(self.base, "data")
        self.socket_dir = os.path.join(self.base, "sock")
        self.log_file = os.path.join(self.base, "server.log")
        self.port = free_port()
        self._names = itertools.count(1)
        os.makedirs(self.socket_dir)
        if self.as_postgres:
            import pwd

            user = pwd.getpwnam("postgres")
            for path in (self.base, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.running = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [os.path.join(self.bin_dir, args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")

    def start(self) -> None:
        """Start (or restart) the server; returns once it accepts connections."""
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self.init()
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        result = self._run("pg_ctl", "-D", self.data, "-l", self.log_file, "-o", options, "-w", "-t", "60", "start",
                           check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.log()}")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (C{immediate}: as if it crashed)."""
        if self.running:
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)
            self.running = False

    def log(self) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for C{dbname}, over TCP to 127.0.0.1."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its connection string."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg

        name = dsn.rsplit("dbname=", 1)[1].split()[0]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        """Stop the server and remove its folder."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()
