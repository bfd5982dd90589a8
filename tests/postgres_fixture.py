"""A real PostgreSQL server for the storage and worker tests (``postgres_url`` fixture).

Test modules import the fixtures: ``from postgres_fixture import postgres_server_url,
postgres_url`` (``tests/`` is on ``sys.path`` through ``tests/conftest.py``).
``postgres_url`` gives each test its own fresh database. The server is, in order of preference:

1. the one in ``LIGHTNING_TUNE_TEST_POSTGRES_URL`` (``.ci/run`` sets it through
   ``.ci/postgres.sh``; any server where the user may ``CREATE DATABASE``),
2. a throwaway server started here from the Debian binaries (``/usr/lib/postgresql/*/bin``),
   run as the ``postgres`` user when the tests run as root, stopped at the end of the session,
3. none: the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest

ENV_VAR = "LIGHTNING_TUNE_TEST_POSTGRES_URL"


def _bindir() -> pathlib.Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return pathlib.Path(candidates[-1])
    pg_ctl = shutil.which("pg_ctl")
    return pathlib.Path(os.path.realpath(pg_ctl)).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """A PostgreSQL server in a temporary directory, on 127.0.0.1."""

    def __init__(self, bindir: pathlib.Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="lightning-tune-pg-"))
        self.port = _free_port()
        self.password = secrets.token_hex(12)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> str:
        if self.as_root:
            if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
                raise RuntimeError("running as root and there is no `postgres` user")
            shutil.chown(self.tmp, "postgres")
        pwfile = self.tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres")
        init = self._run(
            self.bindir / "initdb", "-D", self.tmp / "data", "-U", "lightning_tune",
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = (
            f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        start = self._run(
            self.bindir / "pg_ctl", "-D", self.tmp / "data", "-l", self.tmp / "server.log",
            "-w", "-t", "60", "-o", options, "start",
        )  # fmt: skip
        if start.returncode != 0:
            log = (
                (self.tmp / "server.log").read_text() if (self.tmp / "server.log").exists() else ""
            )
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log[-500:]}")
        return f"postgresql://lightning_tune:{self.password}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.tmp / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server for this test session (see the module docstring)."""
    if os.environ.get("CI") and not os.environ.get(ENV_VAR):
        # CI must run the PostgreSQL tests: .ci/run starts a server and sets the variable.
        pytest.fail(f"CI is set but {ENV_VAR} is not: .ci/run should have started PostgreSQL")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (dev extra)")
    if os.environ.get(ENV_VAR):
        yield os.environ[ENV_VAR]
        return
    bindir = _bindir()
    if bindir is None:
        pytest.skip(
            f"no PostgreSQL: {ENV_VAR} is not set and no server binaries were found "
            "(apt-get install postgresql, or run .ci/run)"
        )
    server = _Server(bindir)
    try:
        url = server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        server.stop()
        pytest.skip(f"no PostgreSQL: {ENV_VAR} is not set and starting one failed: {err}")
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database for one test, dropped afterwards.

    When the server's user may not create databases, the server's own database is used; the
    tests then stay apart through unique study names.
    """
    import psycopg2
    from sqlalchemy.engine import make_url

    base = make_url(postgres_server_url)
    admin = psycopg2.connect(
        host=base.host, port=base.port, user=base.username, password=base.password,
        dbname=base.database or "postgres",
    )  # fmt: skip
    admin.autocommit = True
    name = f"lt_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error:
        admin.close()
        yield postgres_server_url
        return
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
