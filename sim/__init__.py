"""Parts of the JIMI Open API simulator (`jimi_sim.py` is the entry point).

- `config`   constants shared by the parts and `SimConfig`
- `roads`    geometry (haversine, bearings) and the city road polylines
- `records`  the public frozen records (`SimDevice`, `SimFix`, `SimTrip`, ...)
- `devices`  the deterministic device roster (IMEIs, plates, drivers, accounts)
- `model`    day plans and the `Fleet`: what every vehicle does at any instant
- `protocol` signing, errors, faults and `JimiApi` (the `/route/rest` methods)
- `server`   the HTTP server, `SimServer` and the `/_sim/*` admin endpoints
- `push`     `build_push_deliveries` and `PushSender`
- `s3feed`   `S3Feed`: the fleet's INC tickets and fuel fills as the S3 exports write them

Imports flow one way: config ← roads ← records ← devices ← model ← protocol ← server;
push uses model and protocol's formatters; s3feed uses model (and tickets_import.sample).
"""
