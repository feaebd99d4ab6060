-- migrate: requires-extension postgis
-- R · Tickets read layer (repeatable): open-SLA view, history capture, map and INC dashboard.
-- Reporting functions read `tickets.*`, which `dashboard_ro` cannot see, so they are
-- SECURITY DEFINER with a fixed search_path (every object below is schema-qualified).
-- GeoJSON is built here; the read-API returns the text unchanged.

-- Open tickets with a derived SLA (seed 003: the feed's sla_status means something only once
-- closed). Age runs from created_at_service, falling back to first_seen_at (~30% of tickets
-- lack created_at_service). The SLA target is 48 hours of wall-clock age.
DROP VIEW IF EXISTS tickets.inc_open_sla;
CREATE VIEW tickets.inc_open_sla AS
SELECT i.ticket_id,
       i.raw_status,
       i.normalized_status,
       i.bucket,
       i.is_actionable,
       i.cluster,
       i.region,
       i.location_name,
       i.assigned_team,
       i.owner,
       i.created_at_service,
       i.first_seen_at,
       s.sla_start_at,
       CASE WHEN i.created_at_service IS NOT NULL THEN 'created_at_service'
            WHEN i.first_seen_at IS NOT NULL THEN 'first_seen_at' END              AS sla_basis,
       (extract(epoch FROM now() - s.sla_start_at) / 60)::integer                 AS open_minutes,
       round((extract(epoch FROM now() - s.sla_start_at) / 3600)::numeric, 1)     AS open_hours,
       48                                                                          AS sla_target_hours,
       CASE WHEN s.sla_start_at IS NULL THEN 'unknown'
            WHEN now() - s.sla_start_at > interval '48 hours' THEN 'breached'
            ELSE 'within' END                                                      AS derived_sla_status,
       i.latitude,
       i.longitude,
       i.geom,
       i.geo_source
  FROM tickets.inc i
  CROSS JOIN LATERAL (SELECT coalesce(i.created_at_service, i.first_seen_at) AS sla_start_at) s
 WHERE i.bucket IN ('open', 'pending');

-- Freshness block shared by the map and the dashboard payloads.
CREATE OR REPLACE FUNCTION tickets.freshness(p_feed text DEFAULT 'inc') RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, public AS $$
SELECT jsonb_build_object(
    'last_import_at', m.last_import_at,
    'last_run_at', m.last_run_at,
    'source_max_key', m.source_max_key,
    'minutes_since_import', (extract(epoch FROM now() - m.last_import_at) / 60)::integer,
    'source_max_updated_at', u.max_updated,
    'content_lag_hours', round((extract(epoch FROM now() - u.max_updated) / 3600)::numeric, 1),
    'tickets_total', u.total)
FROM (SELECT max(source_updated_at) AS max_updated, count(*) AS total FROM tickets.inc) u
LEFT JOIN tickets.import_meta m ON m.feed = p_feed
$$;

-- History capture: append closures not yet seen, and (re)write the EAT day's backlog
-- snapshot. `p_at` is the capture time (default now(); tests pass another day).
CREATE OR REPLACE FUNCTION tickets.capture_history(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
DECLARE
    v_day       date := (p_at AT TIME ZONE 'Africa/Nairobi')::date;
    v_day_start timestamptz := v_day::timestamp AT TIME ZONE 'Africa/Nairobi';
    v_closures  integer;
    v_rows      integer;
BEGIN
    -- Two importers must not interleave a day's delete + insert.
    PERFORM pg_advisory_xact_lock(hashtext('tickets.capture_history'));

    INSERT INTO tickets.closure_events
        (ticket_id, closed_at, observed_at, normalized_status, cluster, region, assigned_team,
         created_at_service, mttr)
    SELECT i.ticket_id, i.closed_at, p_at, i.normalized_status, i.cluster, i.region,
           i.assigned_team, i.created_at_service, i.mttr
      FROM tickets.inc i
     WHERE i.bucket = 'closed'
       AND NOT EXISTS (SELECT 1 FROM tickets.closure_events e
                        WHERE e.ticket_id = i.ticket_id
                          AND coalesce(e.closed_at, '-infinity') = coalesce(i.closed_at, '-infinity'))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_closures = ROW_COUNT;

    DELETE FROM tickets.inc_daily_snapshot WHERE snapshot_date = v_day;
    INSERT INTO tickets.inc_daily_snapshot
        (snapshot_date, cluster, open_count, actionable_count, pending_count, breached_count,
         no_start_count, avg_open_hours, max_open_hours, created_count, closed_count, captured_at)
    WITH base AS (
        SELECT coalesce(i.cluster, '(none)') AS cluster,
               i.bucket, i.is_actionable, i.created_at_service, i.closed_at,
               coalesce(i.created_at_service, i.first_seen_at) AS start_at
          FROM tickets.inc i
    )
    SELECT v_day, b.cluster,
           count(*) FILTER (WHERE b.bucket IN ('open', 'pending')),
           count(*) FILTER (WHERE b.bucket IN ('open', 'pending') AND b.is_actionable),
           count(*) FILTER (WHERE b.bucket = 'pending'),
           count(*) FILTER (WHERE b.bucket IN ('open', 'pending') AND p_at - b.start_at > interval '48 hours'),
           count(*) FILTER (WHERE b.bucket IN ('open', 'pending') AND b.start_at IS NULL),
           round((avg(extract(epoch FROM p_at - b.start_at)) FILTER (WHERE b.bucket IN ('open', 'pending')) / 3600)::numeric, 1),
           round((max(extract(epoch FROM p_at - b.start_at)) FILTER (WHERE b.bucket IN ('open', 'pending')) / 3600)::numeric, 1),
           count(*) FILTER (WHERE b.created_at_service >= v_day_start AND b.created_at_service < v_day_start + interval '1 day'),
           count(*) FILTER (WHERE b.closed_at >= v_day_start AND b.closed_at < v_day_start + interval '1 day'),
           p_at
      FROM base b
     GROUP BY b.cluster
    HAVING count(*) FILTER (WHERE b.bucket IN ('open', 'pending')) > 0
        OR count(*) FILTER (WHERE b.created_at_service >= v_day_start AND b.created_at_service < v_day_start + interval '1 day') > 0
        OR count(*) FILTER (WHERE b.closed_at >= v_day_start AND b.closed_at < v_day_start + interval '1 day') > 0;
    GET DIAGNOSTICS v_rows = ROW_COUNT;

    RETURN jsonb_build_object('snapshot_date', v_day, 'closures_added', v_closures,
                              'snapshot_rows', v_rows);
END
$$;

-- One GeoJSON Feature of a ticket (open or closed); shared by both payloads.
CREATE OR REPLACE FUNCTION tickets.inc_feature(i tickets.inc, p_at timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, public AS $$
SELECT jsonb_build_object(
    'type', 'Feature',
    'id', i.ticket_id,
    'geometry', ST_AsGeoJSON(i.geom, 6)::jsonb,
    'properties', jsonb_build_object(
        'ticket_id', i.ticket_id,
        'raw_status', i.raw_status,
        'status', i.normalized_status,
        'bucket', i.bucket,
        'is_actionable', i.is_actionable,
        'cluster', i.cluster,
        'region', i.region,
        'location_name', i.location_name,
        'assigned_team', i.assigned_team,
        'owner', i.owner,
        'created_at_service', i.created_at_service,
        'closed_at', i.closed_at,
        'sla_status', i.sla_status,
        'mttr_min', i.mttr,
        'sla_basis', CASE WHEN i.created_at_service IS NOT NULL THEN 'created_at_service'
                          WHEN i.first_seen_at IS NOT NULL THEN 'first_seen_at' END,
        'open_hours', CASE WHEN i.bucket IN ('open', 'pending') THEN
            round((extract(epoch FROM p_at - coalesce(i.created_at_service, i.first_seen_at)) / 3600)::numeric, 1) END,
        'derived_sla_status', CASE WHEN i.bucket NOT IN ('open', 'pending') THEN NULL
            WHEN coalesce(i.created_at_service, i.first_seen_at) IS NULL THEN 'unknown'
            WHEN p_at - coalesce(i.created_at_service, i.first_seen_at) > interval '48 hours' THEN 'breached'
            ELSE 'within' END,
        'geo_source', i.geo_source))
$$;

-- Every open ticket with a point, for the map; `summary` carries counts and freshness.
CREATE OR REPLACE FUNCTION reporting.fn_tickets_for_map() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
SELECT jsonb_build_object(
    'type', 'FeatureCollection',
    'features', coalesce((
        SELECT jsonb_agg(tickets.inc_feature(i) ORDER BY i.created_at_service NULLS LAST, i.ticket_id)
          FROM tickets.inc i
         WHERE i.bucket IN ('open', 'pending') AND i.geom IS NOT NULL), '[]'::jsonb),
    'summary', jsonb_build_object(
        'open_total', (SELECT count(*) FROM tickets.inc WHERE bucket IN ('open', 'pending')),
        'open_mapped', (SELECT count(*) FROM tickets.inc WHERE bucket IN ('open', 'pending') AND geom IS NOT NULL),
        'by_bucket', coalesce((SELECT jsonb_object_agg(b.bucket, b.n)
                                 FROM (SELECT coalesce(bucket, 'unknown') AS bucket, count(*) AS n
                                         FROM tickets.inc GROUP BY 1) b), '{}'::jsonb),
        'freshness', tickets.freshness('inc')))
$$;

-- The FleetOps live INC map in one payload.
--   p_cluster  NULL / '' / 'all' = all clusters; case-insensitive; a cluster no ticket has is
--              refused ('unknown cluster "X" — see /analytics/filters', 22023)
--   p_status   NULL/'all' = every open ticket; 'open' | 'pending' (bucket); 'actionable';
--              'breached' (derived SLA); or a normalized status ('new', 'assigned', ...)
--   p_window   '24h' | '7d' | '30d' | '90d': closed overlay and flow metrics cover
--              [now - window, now); p_from / p_to (either or both) override it.
-- Raises 22023 (invalid_parameter_value) on a bad window/status or from >= to.
CREATE OR REPLACE FUNCTION reporting.fn_inc_dashboard(
    p_cluster text DEFAULT NULL,
    p_status  text DEFAULT NULL,
    p_window  text DEFAULT '7d',
    p_from    timestamptz DEFAULT NULL,
    p_to      timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public AS $$
DECLARE
    v_now    timestamptz := now();
    v_cluster text := reporting.filter_value(p_cluster);
    v_status text := nullif(lower(btrim(coalesce(p_status, ''))), '');
    v_span   interval;
    v_from   timestamptz;
    v_to     timestamptz;
    v_result jsonb;
BEGIN
    v_span := CASE coalesce(nullif(btrim(p_window), ''), '7d')
        WHEN '24h' THEN interval '24 hours' WHEN '7d' THEN interval '7 days'
        WHEN '30d' THEN interval '30 days' WHEN '90d' THEN interval '90 days'
        WHEN 'custom' THEN NULL END;
    IF v_span IS NULL AND coalesce(nullif(btrim(p_window), ''), '7d') <> 'custom' THEN
        RAISE EXCEPTION 'window must be one of 24h, 7d, 30d, 90d, custom (got %)', p_window
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_span IS NULL AND (p_from IS NULL OR p_to IS NULL) THEN
        RAISE EXCEPTION 'window=custom needs both from and to' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_to := coalesce(p_to, v_now);
    v_from := coalesce(p_from, v_to - v_span);
    IF v_from >= v_to THEN
        RAISE EXCEPTION 'from (%) must be before to (%)', v_from, v_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_status IS NOT NULL AND v_status NOT IN ('all', 'open', 'pending', 'actionable', 'breached',
            'new', 'assigned', 'in_progress', 'other') THEN
        RAISE EXCEPTION 'status must be one of all, open, pending, actionable, breached, new, assigned, in_progress, other (got %)', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_cluster IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM tickets.inc i WHERE lower(i.cluster) = lower(v_cluster)) THEN
        RAISE EXCEPTION 'unknown cluster "%" — see /analytics/filters', v_cluster
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    WITH open_t AS (
        SELECT i, coalesce(i.created_at_service, i.first_seen_at) AS start_at
          FROM tickets.inc i
         WHERE i.bucket IN ('open', 'pending')
           AND (v_cluster IS NULL OR lower(i.cluster) = lower(v_cluster))
    ), open_f AS (
        SELECT o.* FROM open_t o
         WHERE v_status IS NULL OR v_status = 'all'
            OR (v_status IN ('open', 'pending') AND (o.i).bucket = v_status)
            OR (v_status = 'actionable' AND (o.i).is_actionable)
            OR (v_status = 'breached' AND v_now - o.start_at > interval '48 hours')
            OR (o.i).normalized_status = v_status
    ), closed_w AS (
        SELECT i FROM tickets.inc i
         WHERE i.bucket = 'closed' AND i.closed_at >= v_from AND i.closed_at < v_to
           AND (v_cluster IS NULL OR lower(i.cluster) = lower(v_cluster))
    ), created_w AS (
        SELECT count(*) AS n FROM tickets.inc i
         WHERE i.created_at_service >= v_from AND i.created_at_service < v_to
           AND (v_cluster IS NULL OR lower(i.cluster) = lower(v_cluster))
    ), by_cluster AS (
        SELECT coalesce(c.cluster, '(none)') AS cluster,
               sum(c.open_n)::integer AS open, sum(c.actionable_n)::integer AS actionable,
               sum(c.breached_n)::integer AS breached, sum(c.closed_n)::integer AS closed
          FROM (SELECT (o.i).cluster, 1 AS open_n, ((o.i).is_actionable)::int AS actionable_n,
                       (v_now - o.start_at > interval '48 hours')::int AS breached_n, 0 AS closed_n
                  FROM open_f o
                UNION ALL
                SELECT (c.i).cluster, 0, 0, 0, 1 FROM closed_w c) c
         GROUP BY 1
    )
    SELECT jsonb_build_object(
        'params', jsonb_build_object('cluster', v_cluster, 'status', coalesce(v_status, 'all'),
                                     'window', coalesce(nullif(btrim(p_window), ''), '7d'),
                                     'from', v_from, 'to', v_to),
        'generated_at', v_now,
        'open', jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(
            (SELECT jsonb_agg(tickets.inc_feature(o.i, v_now) ORDER BY o.start_at NULLS LAST, (o.i).ticket_id)
               FROM open_f o WHERE (o.i).geom IS NOT NULL), '[]'::jsonb)),
        'closed', jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(
            (SELECT jsonb_agg(tickets.inc_feature(c.i, v_now) ORDER BY (c.i).closed_at DESC, (c.i).ticket_id)
               FROM closed_w c WHERE (c.i).geom IS NOT NULL), '[]'::jsonb)),
        'metrics', jsonb_build_object(
            'open_total', (SELECT count(*) FROM open_f),
            'open_actionable', (SELECT count(*) FROM open_f o WHERE (o.i).is_actionable),
            'open_pending', (SELECT count(*) FROM open_f o WHERE (o.i).bucket = 'pending'),
            'open_breached', (SELECT count(*) FROM open_f o WHERE v_now - o.start_at > interval '48 hours'),
            'open_sla_unknown', (SELECT count(*) FROM open_f o WHERE o.start_at IS NULL),
            'open_unmapped', (SELECT count(*) FROM open_f o WHERE (o.i).geom IS NULL),
            'open_hours_median', (SELECT round((percentile_cont(0.5) WITHIN GROUP (
                                      ORDER BY extract(epoch FROM v_now - o.start_at)) / 3600)::numeric, 1)
                                    FROM open_f o WHERE o.start_at IS NOT NULL),
            'open_hours_max', (SELECT round((max(extract(epoch FROM v_now - o.start_at)) / 3600)::numeric, 1)
                                 FROM open_f o),
            'closed_in_window', (SELECT count(*) FROM closed_w),
            'created_in_window', (SELECT n FROM created_w),
            'closed_unmapped', (SELECT count(*) FROM closed_w c WHERE (c.i).geom IS NULL),
            'mttr_min_median', (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY (c.i).mttr)
                                  FROM closed_w c WHERE (c.i).mttr IS NOT NULL),
            'mttr_min_p90', (SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY (c.i).mttr)
                               FROM closed_w c WHERE (c.i).mttr IS NOT NULL),
            'closed_by_sla_status', coalesce((SELECT jsonb_object_agg(s.k, s.n) FROM (
                SELECT coalesce((c.i).sla_status, 'unknown') AS k, count(*) AS n
                  FROM closed_w c GROUP BY 1) s), '{}'::jsonb),
            'by_cluster', coalesce((SELECT jsonb_agg(to_jsonb(b) ORDER BY b.open DESC, b.cluster)
                                      FROM by_cluster b), '[]'::jsonb)),
        'freshness', tickets.freshness('inc'))
      INTO v_result;
    RETURN v_result;
END
$$;
