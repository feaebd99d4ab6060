"""PostgreSQL client tools (pg_dump / pg_restore) and connection-string helpers.

Passwords never go on a tool's command line (they are passed in PGPASSWORD) and never into a
log line: `describe` names a database as `user@host:port/dbname`, `redact` cleans tool output.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import IO, Any

import psycopg

from backup.errors import BackupError, ToolError

log = logging.getLogger(__name__)

_TOOL_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
STDERR_TAIL = 2000


def parse_conninfo(conninfo: str) -> dict[str, Any]:
    """A connection string (URL or key=value) as a dict; BackupError when unparsable."""
    try:
        return psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        # The message of a parse failure may quote the string: do not repeat it.
        raise BackupError("the connection string cannot be parsed") from exc


def split_password(conninfo: str) -> tuple[str, str | None]:
    """(connection string without its password, the password or None)."""
    info = parse_conninfo(conninfo)
    password = info.pop("password", None)
    rest = {k: v for k, v in info.items() if v is not None}
    return psycopg.conninfo.make_conninfo("", **rest), (str(password) if password else None)


def describe(conninfo: str) -> str:
    """`user@host:port/dbname` for logs: never the password."""
    info = parse_conninfo(conninfo)
    user = info.get("user") or ""
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{user}{'@' if user else ''}{host}:{port}/{database_name(conninfo)}"


def database_name(conninfo: str) -> str:
    """The database a connection string names (libpq's defaults when it names none)."""
    info = parse_conninfo(conninfo)
    name = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user")
    return str(name or os.environ.get("PGUSER") or "postgres")


def redact(text: str, password: str | None) -> str:
    if password:
        text = text.replace(password, "***")
    # Any URL with a password that a tool might echo back.
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def _bin_dir_version(path: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in Path(path).parent.name.split("."))
    except ValueError:
        return (0,)


def find_pg_tool(name: str) -> Path:
    """Path of a client tool: `$PG_BIN/<name>`, else the newest /usr/lib/postgresql/*/bin
    that has it (Debian installs several majors side by side), else PATH; ToolError if none."""
    if env := os.environ.get("PG_BIN"):
        path = Path(env) / name
        if path.exists():
            return path
        raise ToolError(f"{name} not found in PG_BIN={env}")
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_bin_dir_version)[::-1]:
        path = Path(directory) / name
        if path.exists():
            return path
    if found := shutil.which(name):
        return Path(found)
    raise ToolError(f"{name} not found (install postgresql-client or set PG_BIN)")


def tool_major_version(tool: Path) -> int:
    """Major version of a PostgreSQL client tool (`pg_dump (PostgreSQL) 16.4` → 16)."""
    try:
        out = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{tool} --version failed: {exc}") from exc
    match = _TOOL_VERSION.search(out.stdout)
    if not match:
        raise ToolError(f"cannot read the version of {tool}: {out.stdout.strip()!r}")
    return int(match[1])


def check_tool_version(tool: Path, conninfo: str) -> None:
    """Raise ToolError when `tool` is older than the server (pg_dump refuses newer servers).

    Best effort: when the server cannot be reached, the tool itself reports the failure.
    """
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            server_major = conn.info.server_version // 10000
    except psycopg.Error as exc:
        log.debug("version check skipped, %s unreachable: %s", describe(conninfo), exc)
        return
    tool_major = tool_major_version(tool)
    if tool_major < server_major:
        raise ToolError(
            f"{tool} is version {tool_major} but the server is {server_major}: "
            f"install postgresql-client-{server_major} (or newer) or set PG_BIN"
        )


def pg_env(password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return env


def stderr_tail(handle: IO[bytes], password: str | None) -> str:
    handle.seek(0)
    text = handle.read().decode("utf-8", errors="replace").strip()
    return redact(text[-STDERR_TAIL:], password)
