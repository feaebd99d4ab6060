"""Geofences: zones loaded from GeoJSON, enter/exit events and out-of-region episodes.

- `geofences.geojson` — pure parsing and validation of GeoJSON bodies and files;
- `geofences.store` — writing, listing and deleting fences (CLI and `POST /geofences`);
- `geofences.events` — the set-based event pass of the worker's `geofence_events` job;
- `python -m geofences` — the CLI (`load`, `list`, `delete`, `recompute`, `run`).
docs/geofences.md has the definitions, the hysteresis and the settings.
"""
