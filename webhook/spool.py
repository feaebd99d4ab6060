"""The durable local spool: deliveries accepted while PostgreSQL is unreachable.

One file per delivery, named by a monotonic sequence number (`000000001234.json`). A write
goes to a temporary name, is fsynced, renamed into place and the directory fsynced, all before
the receiver replies — so an acknowledged delivery survives a crash or power loss. Files are
replayed in sequence order (in batches, one transaction each) and deleted only after their
database transaction committed; the database write is idempotent, so a crash between commit
and delete replays harmlessly.

Failure modes: `SpoolError` when the directory cannot be written (disk full, permissions);
the receiver then answers 503 so JIMI retries, rather than acknowledging what it cannot keep.
Unreadable files found at replay are moved to `bad/` and logged, never deleted.
One process owns a spool directory (an exclusive `flock` on `.lock`); a second one gets
`SpoolError` at start instead of racing the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{12})\.json")


class SpoolError(OSError):
    """The spool could not write or read a file."""


class Spool:
    """Append-only directory of pending deliveries (thread-safe)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.bad_dir = self.dir / "bad"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.dir}: {exc}") from exc
        self._lock = threading.Lock()
        self._lock_fd: int | None = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(f"spool directory {self.dir} is in use by another process") from exc
        for stale in self.dir.glob(".tmp-*"):  # a write interrupted before its rename
            stale.unlink(missing_ok=True)
        pending = self.pending()
        self._next = pending[-1][0] + 1 if pending else 1
        self._depth = len(pending)

    def close(self) -> None:
        """Release the directory (the files stay for the next start)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def depth(self) -> int:
        """Number of deliveries waiting in the spool."""
        return self._depth

    def pending(self) -> list[tuple[int, Path]]:
        """(sequence, path) of every spooled delivery, oldest first."""
        found = []
        for entry in os.scandir(self.dir):
            match = _NAME.fullmatch(entry.name)
            if match:
                found.append((int(match.group(1)), Path(entry.path)))
        found.sort()
        return found

    def append(self, payload: bytes, *, dead: bool = False) -> int:
        """Write one delivery durably; returns its sequence number. `dead=True` writes it to
        `bad/` instead (kept for a human, never replayed)."""
        with self._lock:
            seq = self._next
            if dead:
                self.bad_dir.mkdir(exist_ok=True)
            final = (self.bad_dir if dead else self.dir) / f"{seq:012d}.json"
            tmp = self.dir / f".tmp-{seq:012d}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    view = memoryview(payload)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, final)
                self._fsync_dir()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise SpoolError(f"cannot write spool file {final}: {exc}") from exc
            self._next = seq + 1
            if not dead:
                self._depth += 1
            return seq

    def read(self, path: Path) -> bytes:
        """The content of a spooled delivery."""
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SpoolError(f"cannot read spool file {path}: {exc}") from exc

    def remove(self, path: Path) -> None:
        """Delete a delivery after its database commit."""
        with self._lock:
            path.unlink(missing_ok=True)
            self._fsync_dir()
            self._depth = max(0, self._depth - 1)

    def remove_many(self, paths: list[Path]) -> None:
        """Delete a batch of deliveries after their (one) database commit: one directory
        fsync for all of them."""
        with self._lock:
            for path in paths:
                path.unlink(missing_ok=True)
            self._fsync_dir()
            self._depth = max(0, self._depth - len(paths))

    def quarantine(self, path: Path, reason: str) -> None:
        """Move an unreadable file aside (kept for a human, out of the replay order)."""
        with self._lock:
            self.bad_dir.mkdir(exist_ok=True)
            os.replace(path, self.bad_dir / path.name)
            self._fsync_dir()
            self._depth = max(0, self._depth - 1)
        log.error("spool file %s is unreadable (%s): moved to %s", path.name, reason, self.bad_dir)

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
