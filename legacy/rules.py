"""Known renames and unit rules between the previous generation's columns and ours.

Columns are matched by name first (information_schema on both sides). Where the old database
kept a value under another name or in another unit, a rule says how to get it: the seeds'
fix history names the cases (FIX-M16: the API's trip `distance` is metres, stored as km;
FIX-M13: the parking duration field is `durSecond`; FIX-E06: the polled alarm fields are
`alertTypeId` / `alarmTypeName` / `alertTime`). A rule applies only when the old table has
the old column *and* the new column was not already filled from a same-named old column, so
a database that already has `distance_km` never gets a second, divided copy.

Old spellings are compared normalised (lower case, no underscores): `durSecond`,
`dur_second` and `DurSecond` are the same column. The same normalisation is the last resort
for any column: `gpsTime` in an old table fills `gps_time`.
"""

from __future__ import annotations

from dataclasses import dataclass

NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")


@dataclass(frozen=True)
class Rule:
    table: str
    new: str  # column of the new schema
    old: tuple[str, ...]  # old spellings, normalised (see `norm`)
    expr: str = "{}"  # SQL over the old column ({} is the quoted old column)
    why: str = ""
    numeric: bool = False  # the old column must be numeric for `expr` to make sense


def norm(name: str) -> str:
    """Compare column names ignoring case and underscores."""
    return name.replace("_", "").lower()


RULES: tuple[Rule, ...] = (
    Rule("trips", "distance_km", ("distancem", "distance", "distancemeters", "distancemetres"),
         "{}::numeric / 1000", "metres to km (FIX-M16: the API's trip distance is metres)",
         numeric=True),
    Rule("trips", "driving_time_s", ("runtimesecond", "drivingtime", "traveltime", "runtimes"),
         why="trip duration in seconds (runTimeSecond)", numeric=True),
    Rule("trips", "avg_speed_kmh", ("avgspeed", "averagespeed"), why="km/h", numeric=True),
    Rule("trips", "max_speed_kmh", ("maxspeed",), why="km/h", numeric=True),
    Rule("parking_events", "duration_s", ("dursecond", "seconds", "durationsecond"),
         why="parking duration in seconds (FIX-M13: durSecond)", numeric=True),
    Rule("alarms", "alarm_type", ("alerttypeid", "alarmtypeid"),
         why="polled alarm type id (FIX-E06: alertTypeId)"),
    Rule("alarms", "alarm_name", ("alarmtypename", "alerttypename"),
         why="polled alarm name (FIX-E06: alarmTypeName)"),
    Rule("alarms", "alarm_time", ("alerttime",), why="polled alarm time (FIX-E06: alertTime)"),
    Rule("position_history", "speed_kmh", ("speed", "gpsspeed"), why="km/h", numeric=True),
    Rule("position_history", "direction_deg", ("direction", "course"), why="degrees",
         numeric=True),
    Rule("position_history", "lat", ("latitude",), why="degrees", numeric=True),
    Rule("position_history", "lng", ("longitude", "lon"), why="degrees", numeric=True),
    Rule("live_positions", "speed_kmh", ("speed", "gpsspeed"), why="km/h", numeric=True),
    Rule("live_positions", "lat", ("latitude",), why="degrees", numeric=True),
    Rule("live_positions", "lng", ("longitude", "lon"), why="degrees", numeric=True),
)  # fmt: skip


def rules_for(table: str) -> tuple[Rule, ...]:
    return tuple(r for r in RULES if r.table == table)
