"""A progress bar for the history copy, on stderr (stdout keeps the report).

On a terminal the bar redraws in place after every batch; in a log (not a TTY: Coolify,
`nohup`, CI) it writes one line at most every `every_s` seconds and when a table is done, so
a long copy neither floods the log nor stays silent.

    position_history  [##########----------]  50%  1,250,000 rows  104,210 rows/s  ETA 0:00:12
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

WIDTH = 20


@dataclass
class Progress:
    """Per table: share of the old time range copied, rows, rate and time left."""

    spans: dict[str, tuple[datetime, datetime]]  # table -> old (min, max) of its time column
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _rows: dict[str, int] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _last_line: float = float("-inf")

    def __call__(self, table: str, until: datetime | None, rows: int) -> None:
        """The copy's batch hook: `until` is where the copied range now ends."""
        now = self.clock()
        start = self._started.setdefault(table, now)
        total = self._rows[table] = self._rows.get(table, 0) + rows
        share = self.share(table, until)
        line = render(table, share, total, now - start)
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if share >= 1 else ""))
        elif share >= 1 or now - self._last_line >= self.every_s:
            self.stream.write(line + "\n")
            self._last_line = now
        self.stream.flush()

    def share(self, table: str, until: datetime | None) -> float:
        span = self.spans.get(table)
        if until is None or span is None:
            return 1.0
        lo, hi = span
        if until > hi:
            return 1.0
        whole = (hi - lo).total_seconds()
        return 1.0 if whole <= 0 else max(0.0, min(1.0, (until - lo).total_seconds() / whole))


def render(table: str, share: float, rows: int, elapsed_s: float) -> str:
    """One progress line (pure)."""
    filled = round(share * WIDTH)
    rate = rows / elapsed_s if elapsed_s > 0 else 0.0
    left = elapsed_s * (1 - share) / share if 0 < share < 1 else 0.0
    eta = str(timedelta(seconds=round(left)))
    return (
        f"{table:<18} [{'#' * filled}{'-' * (WIDTH - filled)}] {share:4.0%}"
        f"  {rows:,} rows  {rate:,.0f} rows/s  ETA {eta}"
    )
