-- migrate: requires-extension postgis
-- R · Ticket visits (issue #16): computing them, and their read layer (docs/visits.md).
-- The reporting functions read `tickets.*` and `tracksolid.*`, which `dashboard_ro` cannot
-- see: SECURITY DEFINER with a fixed search_path, every object schema-qualified.

-- Recompute the visits in [p_since, p_until) of every ticket whose window
-- [created - p_before, closed + p_after] overlaps that period. Those visits are replaced
-- (delete + insert in the caller's transaction), so a rerun over the same period changes
-- nothing and late positions inside it are picked up; earlier visits are kept.
--
-- A visit is a vehicle *stopped* at the ticket's site. Evidence = plausible GPS fixes
-- (quality_flag IS NULL, not cell-tower LBS) at under p_stop_kmh within p_radius_m of the
-- ticket's own point, and parking/idling events located there (each an interval
-- start..end). Evidence of one vehicle at one ticket is one visit while each piece starts
-- less than p_gap_s after the previous ones ended; a visit is kept when it lasted
-- p_min_dwell_s or contains a stop event (two stationary fixes at a red light are not a
-- visit). Tickets geocoded only to their cluster (`geo_source = 'cluster'`, a point
-- kilometres from the site) get no visits.
--
-- Speed: tickets and evidence are matched by a hash join on (grid cell, day): each ticket is
-- entered in its cell and the 8 around it (cells at least p_radius_m wide) for every day its
-- window touches, each piece of evidence looks up its own cell and day; the exact test is
-- then the distance on a local equirectangular projection (under 0.1 % off the spheroid at
-- these distances, no geometry built per row). No spatial index on position_history is
-- needed and the time range prunes TimescaleDB chunks.
CREATE OR REPLACE FUNCTION tracksolid.refresh_ticket_visits(
    p_since timestamptz, p_until timestamptz,
    p_radius_m double precision DEFAULT 150, p_min_dwell_s integer DEFAULT 120,
    p_gap_s integer DEFAULT 600, p_before interval DEFAULT interval '1 hour',
    p_after interval DEFAULT interval '2 hours', p_stop_kmh double precision DEFAULT 5)
RETURNS TABLE (tickets integer, visits integer)
LANGUAGE plpgsql
-- the joins and window sorts of a week of a large fleet fit in memory (no spill to disk);
-- the planner underestimates the (cell, day) matches and would sort all the evidence for a
-- merge join: hashing the cells is several times faster
SET work_mem = '64MB'
SET enable_mergejoin = off
SET search_path = pg_catalog, public AS $$
DECLARE
    v_cell  double precision;
    v_t0    timestamptz;
    v_t1    timestamptz;
    v_n     integer;
    v_v     integer;
BEGIN
    DROP TABLE IF EXISTS pg_temp.visit_tickets;
    CREATE TEMP TABLE visit_tickets ON COMMIT DROP AS
    SELECT i.ticket_id, ST_Y(i.geom) AS lat, ST_X(i.geom) AS lng,
           coalesce(i.created_at_service, i.first_seen_at) - p_before AS w0,
           coalesce(i.closed_at + p_after, now()) AS w1
      FROM tickets.inc i
     WHERE i.geom IS NOT NULL
       AND i.geo_source IN ('feed', 'location')
       AND coalesce(i.created_at_service, i.first_seen_at) IS NOT NULL
       AND coalesce(i.created_at_service, i.first_seen_at) - p_before < p_until
       AND coalesce(i.closed_at + p_after, 'infinity') > p_since;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n = 0 THEN
        RETURN QUERY SELECT 0, 0;
        RETURN;
    END IF;
    -- Only the period is recomputed (a ticket open for two months is not re-read from its
    -- first day every 10 minutes): its visits that end before p_since stay as they are; a
    -- visit in progress at p_since is recomputed whole (the period starts at its arrival).
    SELECT least(p_since, min(v.arrived_at)) INTO v_t0
      FROM tracksolid.ticket_visits v JOIN visit_tickets t USING (ticket_id)
     WHERE v.departed_at >= p_since AND v.arrived_at < p_until;
    DELETE FROM tracksolid.ticket_visits v USING visit_tickets t
     WHERE v.ticket_id = t.ticket_id AND v.departed_at >= p_since AND v.arrived_at < p_until;
    SELECT greatest(min(w0), v_t0), least(max(w1), p_until),
           -- a cell is p_radius_m wide also in longitude at the highest latitude present
           p_radius_m / 111195.0 / cos(radians(least(max(abs(lat)), 80)))
      INTO v_t0, v_t1, v_cell FROM visit_tickets;

    -- Each ticket in its cell and the 8 around it, for every day its window touches (a table
    -- with statistics, so the planner hashes it rather than sorting the evidence).
    DROP TABLE IF EXISTS pg_temp.visit_cells;
    CREATE TEMP TABLE visit_cells ON COMMIT DROP AS
    SELECT t.ticket_id, t.lat, t.lng, t.w0, t.w1, cos(radians(t.lat)) AS k,
           floor(t.lat / v_cell)::bigint + dy AS cy, floor(t.lng / v_cell)::bigint + dx AS cx,
           d AS day
      FROM visit_tickets t, generate_series(-1, 1) dy, generate_series(-1, 1) dx,
           generate_series(floor(extract(epoch FROM greatest(t.w0, v_t0)) / 86400)::bigint,
                           floor(extract(epoch FROM least(t.w1, v_t1)) / 86400)::bigint) d;
    ANALYZE visit_cells;

    INSERT INTO tracksolid.ticket_visits (ticket_id, imei, arrived_at, departed_at, on_site_s,
                                          fixes, stop_evidence, min_distance_m, driver_name)
    WITH evidence AS (
        SELECT p.imei, p.gps_time AS at, p.gps_time AS until, p.lat, p.lng, false AS stop,
               floor(extract(epoch FROM p.gps_time) / 86400)::bigint AS day
          FROM tracksolid.position_history p
         WHERE p.gps_time >= v_t0 AND p.gps_time < v_t1 AND p.quality_flag IS NULL
           AND coalesce(p.speed_kmh, 0) < p_stop_kmh
           AND coalesce(p.pos_type, 'GPS') <> 'LBS'
        UNION ALL
        SELECT s.imei, s.start_time, coalesce(s.end_time, s.start_time), s.lat, s.lng, true, d
          FROM tracksolid.parking_events s,
               generate_series(floor(extract(epoch FROM greatest(s.start_time, v_t0)) / 86400)::bigint,
                               floor(extract(epoch FROM least(coalesce(s.end_time, s.start_time),
                                                              v_t1)) / 86400)::bigint) d
         WHERE s.start_time < v_t1 AND coalesce(s.end_time, s.start_time) >= v_t0
           AND s.lat IS NOT NULL AND s.lng IS NOT NULL
    ), near AS (
        SELECT c.ticket_id, e.imei, e.at, e.until, e.stop,
               sqrt(((e.lng - c.lng) * c.k) ^ 2 + (e.lat - c.lat) ^ 2) * 111195.0 AS d
          FROM evidence e
          JOIN visit_cells c ON c.cy = floor(e.lat / v_cell)::bigint
                      AND c.cx = floor(e.lng / v_cell)::bigint
                      AND c.day = e.day
         WHERE e.at < c.w1 AND e.until >= c.w0
    ), unique_near AS (  -- a stop spanning two days was looked up once per day
        SELECT DISTINCT ON (ticket_id, imei, at, until, stop) * FROM near
         WHERE d <= p_radius_m
    ), reach AS (
        -- how far the evidence so far reaches (a running max: linear, the frame head is fixed)
        SELECT n.*, max(n.until) OVER (PARTITION BY n.ticket_id, n.imei ORDER BY n.at, n.until
                                       ROWS UNBOUNDED PRECEDING) AS reached
          FROM unique_near n
    ), marked AS (
        -- a new visit starts where the evidence so far ended more than p_gap_s earlier
        SELECT r.*, CASE WHEN r.at - lag(r.reached) OVER (PARTITION BY r.ticket_id, r.imei
                                                          ORDER BY r.at, r.until)
                              > make_interval(secs => p_gap_s) THEN 1 ELSE 0 END AS brk
          FROM reach r
    ), grouped AS (
        SELECT m.*, sum(m.brk) OVER (PARTITION BY m.ticket_id, m.imei ORDER BY m.at, m.until
                                     ROWS UNBOUNDED PRECEDING) AS grp
          FROM marked m
    ), visits AS (
        SELECT ticket_id, imei, min(at) AS arrived_at, max(until) AS departed_at,
               count(*) FILTER (WHERE NOT stop) AS fixes, bool_or(stop) AS stop_evidence,
               min(d) AS min_distance_m
          FROM grouped
         GROUP BY ticket_id, imei, grp
        HAVING bool_or(stop) OR max(until) - min(at) >= make_interval(secs => p_min_dwell_s)
    )
    SELECT v.ticket_id, v.imei, v.arrived_at, v.departed_at,
           extract(epoch FROM v.departed_at - v.arrived_at)::integer, v.fixes, v.stop_evidence,
           v.min_distance_m,
           coalesce(a.driver_name, dv.driver_name)
      FROM visits v
      LEFT JOIN tracksolid.devices dv ON dv.imei = v.imei
      LEFT JOIN LATERAL (
          SELECT da.driver_name FROM tracksolid.driver_assignments da
           WHERE da.imei = v.imei AND da.valid_from <= v.arrived_at
             AND (da.valid_to IS NULL OR da.valid_to > v.arrived_at)
           ORDER BY da.valid_from DESC LIMIT 1) a ON true
    ON CONFLICT (ticket_id, imei, arrived_at) DO NOTHING;
    GET DIAGNOSTICS v_v = ROW_COUNT;
    RETURN QUERY SELECT v_n, v_v;
END
$$;

-- Visits, KPIs and the two verification lists for one window of EAT days.
--   p_from, p_to   inclusive EAT days: tickets created (or first seen) in them
--   p_cluster, p_region   NULL = all (case-insensitive)
--   p_ticket       one ticket (NULL = all); p_vehicle   plate, device name or IMEI
--   p_limit        rows per list (the counts in `kpis` are always complete)
CREATE OR REPLACE FUNCTION reporting.fn_ticket_visits(
    p_from date, p_to date, p_cluster text DEFAULT NULL, p_region text DEFAULT NULL,
    p_ticket text DEFAULT NULL, p_vehicle text DEFAULT NULL, p_limit integer DEFAULT 500)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
WITH t AS (
    SELECT i.ticket_id, i.cluster, i.region, i.bucket, i.location_name, i.geo_source,
           coalesce(i.created_at_service, i.first_seen_at) AS created_at, i.closed_at,
           i.latitude, i.longitude,
           (coalesce(i.created_at_service, i.first_seen_at) AT TIME ZONE 'Africa/Nairobi')::date AS day
      FROM tickets.inc i
     WHERE coalesce(i.created_at_service, i.first_seen_at) >= (p_from::timestamp AT TIME ZONE 'Africa/Nairobi')
       AND coalesce(i.created_at_service, i.first_seen_at) < ((p_to + 1)::timestamp AT TIME ZONE 'Africa/Nairobi')
       AND (p_cluster IS NULL OR lower(i.cluster) = lower(p_cluster))
       AND (p_region IS NULL OR lower(i.region) = lower(p_region))
       AND (p_ticket IS NULL OR i.ticket_id = p_ticket)
), dev AS (
    SELECT d.imei, d.vehicle_number, d.device_name FROM tracksolid.devices d
), v AS (
    SELECT tv.*, t.cluster, t.region, t.created_at, t.closed_at, dev.vehicle_number,
           dev.device_name,
           row_number() OVER (PARTITION BY tv.ticket_id ORDER BY tv.arrived_at) AS nth
      FROM tracksolid.ticket_visits tv
      JOIN t USING (ticket_id)
      LEFT JOIN dev USING (imei)
     WHERE p_vehicle IS NULL OR tv.imei = p_vehicle
        OR lower(dev.vehicle_number) = lower(p_vehicle) OR lower(dev.device_name) = lower(p_vehicle)
), per_ticket AS (
    SELECT t.*, f.arrived_at AS first_arrival, coalesce(s.on_site_s, 0) AS on_site_s,
           f.ticket_id IS NOT NULL AS visited,
           t.geo_source IN ('feed', 'location') AS verifiable
      FROM t
      LEFT JOIN v f ON f.ticket_id = t.ticket_id AND f.nth = 1
      LEFT JOIN (SELECT ticket_id, sum(on_site_s) AS on_site_s FROM v GROUP BY 1) s
             ON s.ticket_id = t.ticket_id
), kpis AS (
    SELECT day, coalesce(cluster, '(none)') AS cluster, coalesce(region, '(none)') AS region,
           count(*) AS tickets,
           count(*) FILTER (WHERE verifiable) AS verifiable,
           count(*) FILTER (WHERE visited) AS visited,
           count(*) FILTER (WHERE closed_at IS NOT NULL AND verifiable) AS closed,
           count(*) FILTER (WHERE closed_at IS NOT NULL AND verifiable AND visited) AS closed_visited,
           count(*) FILTER (WHERE closed_at IS NOT NULL AND verifiable AND NOT visited) AS closed_without_visit,
           count(*) FILTER (WHERE closed_at IS NULL AND verifiable AND NOT visited) AS open_not_visited,
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_arrival - created_at))
                  FILTER (WHERE visited AND first_arrival > created_at) / 60)::numeric, 1) AS time_to_site_min_p50,
           round((avg(on_site_s) FILTER (WHERE visited) / 60)::numeric, 1) AS time_on_site_min_avg
      FROM per_ticket
     GROUP BY 1, 2, 3
)
SELECT jsonb_build_object(
    'params', jsonb_strip_nulls(jsonb_build_object(
        'from', p_from, 'to', p_to, 'cluster', p_cluster, 'region', p_region,
        'ticket_id', p_ticket, 'vehicle', p_vehicle, 'limit', p_limit)),
    'summary', (SELECT jsonb_build_object(
        'tickets', count(*), 'verifiable', count(*) FILTER (WHERE verifiable),
        'visited', count(*) FILTER (WHERE visited),
        'closed_with_visit_share', round(count(*) FILTER (WHERE closed_at IS NOT NULL AND verifiable AND visited)::numeric
              / nullif(count(*) FILTER (WHERE closed_at IS NOT NULL AND verifiable), 0), 3),
        'closed_without_visit', count(*) FILTER (WHERE closed_at IS NOT NULL AND verifiable AND NOT visited),
        'open_not_visited', count(*) FILTER (WHERE closed_at IS NULL AND verifiable AND NOT visited),
        'visits', (SELECT count(*) FROM v)) FROM per_ticket),
    'kpis', coalesce((SELECT jsonb_agg(to_jsonb(k) ORDER BY k.day, k.cluster, k.region) FROM kpis k), '[]'),
    'visits', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'ticket_id', x.ticket_id, 'imei', x.imei, 'vehicle_number', x.vehicle_number,
        'driver_name', x.driver_name, 'arrived_at', x.arrived_at, 'departed_at', x.departed_at,
        'on_site_min', round(x.on_site_s / 60.0, 1), 'fixes', x.fixes,
        'stop_evidence', x.stop_evidence, 'min_distance_m', round(x.min_distance_m::numeric, 1),
        'cluster', x.cluster, 'region', x.region,
        'minutes_after_creation', round((extract(epoch FROM x.arrived_at - x.created_at) / 60)::numeric, 1))
        ORDER BY x.arrived_at DESC, x.ticket_id, x.imei)
        FROM (SELECT * FROM v ORDER BY arrived_at DESC, ticket_id, imei LIMIT p_limit) x), '[]'),
    'closed_without_visit', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'ticket_id', y.ticket_id, 'cluster', y.cluster, 'region', y.region,
        'location_name', y.location_name, 'created_at', y.created_at, 'closed_at', y.closed_at)
        ORDER BY y.closed_at DESC, y.ticket_id)
        FROM (SELECT * FROM per_ticket WHERE closed_at IS NOT NULL AND verifiable AND NOT visited
               ORDER BY closed_at DESC, ticket_id LIMIT p_limit) y), '[]'),
    'open_not_visited', coalesce((SELECT jsonb_agg(jsonb_build_object(
        'ticket_id', z.ticket_id, 'cluster', z.cluster, 'region', z.region,
        'location_name', z.location_name, 'created_at', z.created_at,
        'open_min', round((extract(epoch FROM now() - z.created_at) / 60)::numeric, 0))
        ORDER BY z.created_at, z.ticket_id)
        FROM (SELECT * FROM per_ticket WHERE closed_at IS NULL AND verifiable AND NOT visited
               ORDER BY created_at, ticket_id LIMIT p_limit) z), '[]'))
$$;

-- The vehicles nearest to one ticket now: KNN on live_positions (GiST on geom), exact
-- distance on the geography. status: moving (speed >= 5 km/h), idling (ignition on),
-- parked; `busy_on` names another ticket the vehicle is on site at now (a visit whose last
-- evidence is under 15 minutes old). p_max_age_h drops vehicles whose last fix is older.
CREATE OR REPLACE FUNCTION reporting.fn_ticket_nearest_vehicles(
    p_ticket text, p_limit integer DEFAULT 10, p_max_age_h integer DEFAULT 24)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
DECLARE
    v_t tickets.inc;
BEGIN
    SELECT * INTO v_t FROM tickets.inc WHERE ticket_id = p_ticket;
    IF NOT FOUND THEN
        RETURN NULL;  -- the read-API answers 404
    END IF;
    IF v_t.geom IS NULL THEN
        RAISE EXCEPTION 'ticket % has no location yet (not geocoded)', left(p_ticket, 40)
            USING ERRCODE = '22023';
    END IF;
    RETURN jsonb_build_object(
        'ticket', jsonb_build_object('ticket_id', v_t.ticket_id, 'cluster', v_t.cluster,
                                     'location_name', v_t.location_name, 'lat', v_t.latitude,
                                     'lng', v_t.longitude, 'geo_source', v_t.geo_source,
                                     'bucket', v_t.bucket),
        'vehicles', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'imei', n.imei, 'vehicle_number', d.vehicle_number, 'driver_name', d.driver_name,
                'distance_km', round((ST_Distance(n.geom::geography, v_t.geog) / 1000)::numeric, 3),
                'status', CASE WHEN n.speed_kmh >= 5 THEN 'moving'
                               WHEN n.acc_on THEN 'idling' ELSE 'parked' END,
                'speed_kmh', n.speed_kmh, 'gps_time', n.gps_time,
                'busy_on', (SELECT tv.ticket_id FROM tracksolid.ticket_visits tv
                             WHERE tv.imei = n.imei AND tv.ticket_id <> v_t.ticket_id
                               AND tv.departed_at > now() - interval '15 minutes'
                             ORDER BY tv.departed_at DESC LIMIT 1))
                ORDER BY n.rank)
              FROM (SELECT lp.imei, lp.geom, lp.speed_kmh, lp.acc_on, lp.gps_time,
                           row_number() OVER (ORDER BY lp.geom <-> v_t.geom) AS rank
                      FROM (SELECT * FROM tracksolid.live_positions l
                             WHERE l.gps_time > now() - make_interval(hours => p_max_age_h)
                             ORDER BY l.geom <-> v_t.geom LIMIT p_limit) lp) n
              LEFT JOIN tracksolid.devices d ON d.imei = n.imei), '[]'::jsonb));
END
$$;
