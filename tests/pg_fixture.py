"""A real PostgreSQL server for the tests, started once per session from Debian's
`postgresql` package (`make test` installs it): `initdb` into a temporary folder, `pg_ctl
start` on a free loopback port with its socket in that folder, stopped at the end.

Every test gets its own schema (`pg_url`), so tests share the server and nothing else.
Skips with the reason when the server binaries are absent. initdb refuses to run as root;
as root the server runs as the unprivileged `nobody` (its folder handed to that user).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["find_pg_bin", "pg_server", "pg_url", "start_pg", "stop_pg"]


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, or None."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found = [b for b in found if (b / "pg_ctl").exists()]
    if not found:
        return None
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pg(root: Path | None = None) -> tuple[str, Path, list[str]]:
    """Start a throwaway server; returns (URL of its `postgres` database, its folder, the
    command prefix it runs under). RuntimeError with the server's log if it cannot start."""
    bindir = find_pg_bin()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    root = Path(root or tempfile.mkdtemp(prefix="voxid-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        # initdb will not run as root: hand the folder to an unprivileged user.
        shutil.chown(root, "nobody", "nogroup")
        prefix = ["runuser", "-u", "nobody", "--"]
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip()}\n{tail}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "voxid", "--auth=trust", "-E", "UTF8",
        "--no-sync", "--no-instructions")  # fmt: skip
    # fsync off: a test server need not survive a power cut, and fsyncs dominate its writes.
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t",
        "60", "start")  # fmt: skip
    return f"postgresql://voxid@127.0.0.1:{port}/postgres", root, prefix


def stop_pg(root: Path, prefix: list[str]) -> None:
    """Stop a server `start_pg` started and delete its folder."""
    bindir = find_pg_bin()
    if bindir is not None and (root / "data" / "postmaster.pid").exists():
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server started for this test session."""
    if find_pg_bin() is None:
        pytest.skip(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql; make setup does)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    url, root, prefix = start_pg()
    try:
        yield url
    finally:
        stop_pg(root, prefix)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A URL whose tables live in a fresh schema of the session's server."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_server}?options=-csearch_path%3D{schema}"
