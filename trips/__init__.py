"""Trips from positions: speeds of every trip and trips/stops derived from GPS fixes.

`trips.derive` holds the set-based SQL (one incremental pass, `run_pass`); `trips.job` runs
it as the ingest worker's `derive_trips` job. docs/ingestion.md, "Trip speeds and derived
trips", documents the algorithm, its parameters and the precedence of the API's figures.
"""
