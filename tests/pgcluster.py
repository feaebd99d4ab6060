"""Throwaway PostgreSQL clusters for tests and the demo, from the machine's own binaries.

`LocalCluster` runs `initdb` + `pg_ctl` in a temporary directory (as the `postgres` OS user
when the caller is root, because initdb refuses root), listens on 127.0.0.1:<free port> with
trust authentication, and is removed on `stop(remove=True)`. Tests that need to stop and
restart the database mid-stream (the webhook spool test) use `stop()` / `start()` directly.
`init_replica_of(primary)` instead of `init()` makes a streaming hot standby (read replicas).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class ClusterError(RuntimeError):
    """The local cluster could not be created or started."""


def find_pg_bin() -> Path:
    """Directory with initdb/pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ClusterError("PostgreSQL server binaries not found (set PG_BIN or install postgresql)")


def timescaledb_installed(pg_bin: Path | None = None) -> bool:
    """Whether the TimescaleDB extension files are installed for these server binaries
    (`../shared/tools/timescaledb/install.sh` puts them there)."""
    bin_dir = pg_bin or find_pg_bin()
    result = subprocess.run(
        [str(bin_dir / "pg_config"), "--sharedir", "--pkglibdir"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        major = bin_dir.parent.name
        share, lib = f"/usr/share/postgresql/{major}", f"/usr/lib/postgresql/{major}/lib"
    else:
        share, lib = result.stdout.split()[:2]
    return (Path(share) / "extension" / "timescaledb.control").exists() and bool(
        glob.glob(f"{lib}/timescaledb-*.so")
    )


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCluster:
    """A disposable PostgreSQL server on loopback (superuser `postgres`, trust auth)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        port: int | None = None,
        *,
        durable: bool = False,
        timescaledb: bool | None = None,
    ) -> None:
        self.bin = find_pg_bin()
        # Preload TimescaleDB as production does (background workers on) when it is installed;
        # `timescaledb=False` gives a plain server even then (installed but not preloaded).
        self.timescaledb = timescaledb_installed(self.bin) if timescaledb is None else timescaledb
        self.port = port or free_port()
        self._own_dir = base_dir is None
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="pgtest-"))
        self.data = self.base / "data"
        self.sock_dir = self.base / "sock"
        self.log_file = self.base / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        # Tests trade durability for speed; benchmarks use durable=True (fsync on, as in prod).
        self.durable = durable

    @property
    def admin_url(self) -> str:
        """Connection string of the `postgres` superuser to the `postgres` database."""
        return self.url("postgres")

    def url(self, dbname: str, user: str = "postgres") -> str:
        """Connection string for a database of this cluster."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def _run(
        self, args: list[str | Path], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        kwargs: dict[str, object] = {}
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")

            def demote() -> None:
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            kwargs["preexec_fn"] = demote
        result = subprocess.run(  # noqa: PLW1510 - checked below with a clear message
            cmd,
            capture_output=True,
            text=True,
            cwd=str(self.base),
            **kwargs,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed: {result.stderr or result.stdout}")
        return result  # type: ignore[no-any-return]

    def init(self) -> None:
        """Create the data directory with initdb (fast, unsafe-on-crash settings for tests)."""
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock_dir, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                self.bin / "initdb",
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        conf = self.data / "postgresql.conf"
        with conf.open("a") as fh:
            if not self.durable:
                fh.write(
                    "\n# test cluster: speed over durability\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                )
            fh.write(
                "max_connections = 300\nshared_buffers = 256MB\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sock_dir}'\n"
                "timezone = 'UTC'\nlog_min_messages = warning\n"
            )
            if self.timescaledb:
                fh.write(
                    "shared_preload_libraries = 'timescaledb'\n"
                    "timescaledb.telemetry_level = off\n"
                    "max_worker_processes = 48\n"
                    "timescaledb.max_background_workers = 32\n"
                )

    def init_replica_of(self, primary: LocalCluster) -> None:
        """Make this data directory a streaming hot standby of `primary` (running):
        `pg_basebackup -R` copies it (and its postgresql.conf, so the same
        shared_preload_libraries) and writes standby.signal + primary_conninfo. Create this
        cluster with `timescaledb=primary.timescaledb`; then `start()` as usual."""
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock_dir, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                self.bin / "pg_basebackup",
                "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-D", self.data, "-R", "-X", "stream", "-c", "fast", "--no-sync",
            ]
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(
                f"\n# hot standby of 127.0.0.1:{primary.port}\n"
                f"unix_socket_directories = '{self.sock_dir}'\n"
                "hot_standby = on\nhot_standby_feedback = on\n"
            )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections (a failure quotes the log)."""
        try:
            self._start(timeout)
        except ClusterError as exc:
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
            hint = ""
            if "timescaledb" in tail and "undefined symbol" in tail:
                hint = (
                    "\nTimescaleDB was built for a newer PostgreSQL minor release than this one:"
                    " upgrade the server package (apt-get install --only-upgrade postgresql-15;"
                    " `make deps` does it)"
                )
            raise ClusterError(f"{exc}\n{tail}{hint}") from exc

    def _start(self, timeout: float) -> None:
        self._run(
            [
                self.bin / "pg_ctl",
                "-D",
                self.data,
                "-l",
                self.log_file,
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = self._run(
                [self.bin / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)], check=False
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError(f"server on port {self.port} did not become ready")

    def stop(self, *, mode: str = "fast", remove: bool = False) -> None:
        """Stop the server (and delete its directory when `remove`)."""
        if (self.data / "postmaster.pid").exists():
            self._run([self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], check=False)
        if remove and self._own_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop(remove=True)
