"""A real PostgreSQL server on loopback for the many-machines study test.

Started on a temporary data directory and a free port, as the `postgres` user when the tests run
as root (PostgreSQL refuses root), stopped at teardown. Without the server binaries the test is
skipped with a warning, unless PRUNEBENCH_REQUIRE_POSTGRES is set (CI sets it once it installed
the package), where it fails instead: it is never skipped silently on CI.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        msg = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's `postgresql` "
            "package to run the many-machines study test"
        )
        if os.environ.get("PRUNEBENCH_REQUIRE_POSTGRES"):
            pytest.fail(msg)
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if root else []
    tmp = Path(tempfile.mkdtemp(prefix="prunebench-pg-"))
    if root:
        shutil.chown(tmp, "postgres", "postgres")
    data, port = tmp / "data", _free_port()

    def pg(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data))
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start")
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "pb")
        yield f"postgresql://postgres@127.0.0.1:{port}/pb"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)
