"""What the tests that run against the simulator share: a settable clock and the demo account.

The simulator checks request timestamps and token expiry against its own clock, so a test
sets one `Clock` as both the simulator's (`server.api.clock = clock.epoch`) and the worker's
(`now=clock.now`), and moves it to make time pass.
"""

from __future__ import annotations

from datetime import datetime

# The simulator's demo account (SimConfig defaults), as Settings fields.
SIM_CREDENTIALS = {
    "tracksolid_app_key": "demo-app-key",
    "tracksolid_app_secret": "demo-app-secret",
    "tracksolid_user_id": "fireside",
    "tracksolid_user_pwd": "demo-password",
}


class Clock:
    """A wall clock the test moves by assigning `moment`."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    def epoch(self) -> float:
        return self.moment.timestamp()
