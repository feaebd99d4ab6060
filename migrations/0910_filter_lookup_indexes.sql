-- 0910 · Indexes for reporting.check_filters (R__reporting_geojson.sql): the read-API refuses a
-- filter value that matches nothing ('unknown cost_centre "X" — see /analytics/filters'), and
-- that lookup must stay one index probe per value. The filters are case-insensitive, so the
-- indexes are on lower(...). Plates and IMEIs already have theirs (devices_plate_norm_idx, the
-- primary key; fuel.records_plate_time_idx).

CREATE INDEX IF NOT EXISTS devices_lower_cost_centre_idx ON tracksolid.devices (lower(cost_centre));
CREATE INDEX IF NOT EXISTS devices_lower_driver_name_idx ON tracksolid.devices (lower(driver_name));
CREATE INDEX IF NOT EXISTS devices_lower_city_idx ON tracksolid.devices (lower(city));
CREATE INDEX IF NOT EXISTS inc_lower_cluster_idx ON tickets.inc (lower(cluster));
