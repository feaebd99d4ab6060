-- Repeatable · the read-API's view of alerts (dashboard/alerts.py, docs/alerts.md).
-- Conventions as in R__reporting_geojson.sql: SECURITY DEFINER with a fixed search_path (the
-- read-only role `dashboard_ro` only sees `reporting`), SET TimeZone = 'UTC', bad parameters
-- raise SQLSTATE 22023 with a sentence (HTTP 422). Writes (rules, ack) do not come here: the
-- API makes them with the owner's connection.

-- Every rule, oldest first. Recipients are listed (behind the read-API key); no secret is
-- stored in a rule (channel secrets live in the environment).
CREATE OR REPLACE FUNCTION reporting.fn_alert_rules()
RETURNS json
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
    SELECT json_build_object('rules', coalesce(json_agg(json_build_object(
        'id', r.rule_id, 'name', r.name, 'kind', r.kind, 'params', r.params,
        'cost_centre', r.cost_centre, 'imei', r.imei, 'channels', r.channels,
        'recipients', r.recipients, 'cooldown_s', r.cooldown_s,
        'group_window_s', r.group_window_s, 'digest', r.digest, 'enabled', r.enabled,
        'watermark', r.watermark, 'last_message_at', r.last_message_at,
        'created_at', r.created_at, 'updated_at', r.updated_at) ORDER BY r.rule_id), '[]'))
    FROM tracksolid.alert_rules r
$$;

-- Alert history, newest first, with the messages that carried each alert and their delivery
-- state. p_state: open | acked | resolved | NULL (all).
CREATE OR REPLACE FUNCTION reporting.fn_alerts(
    p_state text DEFAULT NULL, p_rule_id bigint DEFAULT NULL, p_subject text DEFAULT NULL,
    p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL,
    p_limit integer DEFAULT 100, p_offset integer DEFAULT 0)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_out json;
BEGIN
    IF p_state IS NOT NULL AND p_state NOT IN ('open', 'acked', 'resolved') THEN
        RAISE EXCEPTION 'state must be open, acked or resolved' USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000 OR p_offset IS NULL
            OR p_offset NOT BETWEEN 0 AND 1000000000 THEN
        RAISE EXCEPTION 'limit must be 1-1000 and offset 0 or more' USING ERRCODE = '22023';
    END IF;
    IF p_from IS NOT NULL AND p_to IS NOT NULL AND p_from >= p_to THEN
        RAISE EXCEPTION 'from must be before to' USING ERRCODE = '22023';
    END IF;
    WITH m AS (
        SELECT a.*, r.name AS rule_name, r.kind AS rule_kind
        FROM tracksolid.alerts a
        JOIN tracksolid.alert_rules r ON r.rule_id = a.rule_id
        WHERE (p_state IS NULL OR a.state = p_state)
          AND (p_rule_id IS NULL OR a.rule_id = p_rule_id)
          AND (p_subject IS NULL OR a.subject = p_subject)
          AND (p_from IS NULL OR a.last_seen >= p_from)
          AND (p_to IS NULL OR a.first_seen < p_to)
    ), page AS (
        SELECT * FROM m ORDER BY last_seen DESC, alert_id DESC LIMIT p_limit OFFSET p_offset
    )
    SELECT json_build_object(
        'alerts', coalesce((SELECT json_agg(json_build_object(
            'id', p.alert_id, 'rule', json_build_object('id', p.rule_id, 'name', p.rule_name,
                                                        'kind', p.rule_kind),
            'subject', p.subject, 'state', p.state, 'first_seen', p.first_seen,
            'last_seen', p.last_seen, 'count', p.count, 'payload', p.payload,
            'notified_at', p.notified_at, 'acked_at', p.acked_at, 'acked_by', p.acked_by,
            'resolved_at', p.resolved_at,
            'messages', coalesce((
                SELECT json_agg(json_build_object(
                    'message_id', o.message_id, 'channel', o.channel,
                    'attempts', o.attempts, 'delivered_at', o.delivered_at,
                    'given_up_at', o.given_up_at, 'next_attempt_at', o.next_attempt_at,
                    'last_error', o.last_error,
                    'deliveries', coalesce((
                        SELECT json_agg(json_build_object(
                            'attempted_at', dl.attempted_at, 'ok', dl.ok,
                            'status_code', dl.status_code, 'error', dl.error,
                            'duration_ms', dl.duration_ms) ORDER BY dl.delivery_id)
                        FROM tracksolid.alert_deliveries dl
                        WHERE dl.outbox_id = o.outbox_id), '[]')) ORDER BY o.outbox_id)
                FROM tracksolid.alert_outbox o WHERE o.alert_ids @> ARRAY[p.alert_id]), '[]'))
            ORDER BY p.last_seen DESC, p.alert_id DESC) FROM page p), '[]'),
        'total', (SELECT count(*) FROM m),
        'limit', p_limit, 'offset', p_offset)
    INTO v_out;
    RETURN v_out;
END
$$;
