-- 0701 · Alerts (issue #17, docs/alerts.md): rules, alert history, a durable outbox of
-- messages per channel, and every delivery attempt.
--
-- Flow (alerts/ package, worker job `alerts`):
--   rules ──evaluate──▶ alerts (one open row per rule + subject: repeats count++)
--         ──compose──▶ alert_outbox (one row per message × channel; grouped per rule)
--         ──deliver──▶ alert_deliveries (one row per attempt; outbox.delivered_at once)

CREATE TABLE tracksolid.alert_rules (
    rule_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    kind            text NOT NULL CHECK (kind IN (
                        'alarm', 'overspeed', 'device_silent', 'feed_stale', 'importer_stale',
                        'backup_failed', 'spool_depth', 'geofence', 'out_of_region')),
    params          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
    cost_centre     text,                   -- scope: vehicles of this cost centre only
    imei            text,                   -- scope: this vehicle only
    channels        text[] NOT NULL DEFAULT '{webhook}'
                    CHECK (channels <@ ARRAY['webhook', 'email']::text[]),
    recipients      text[] NOT NULL DEFAULT '{}',   -- e-mail addresses (ALERT_EMAIL_TO if empty)
    cooldown_s      integer NOT NULL DEFAULT 3600 CHECK (cooldown_s BETWEEN 0 AND 604800),
    group_window_s  integer NOT NULL DEFAULT 300 CHECK (group_window_s BETWEEN 0 AND 86400),
    digest          boolean NOT NULL DEFAULT false, -- one message a day instead of each burst
    enabled         boolean NOT NULL DEFAULT true,
    watermark       timestamptz,            -- events up to here were evaluated (event kinds)
    last_message_at timestamptz,            -- last message composed (grouping / digest)
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tracksolid.alert_rules IS
    'Alert rules (python -m alerts rules add, POST /alerts/rules); params validated per kind in alerts/rules.py. docs/alerts.md.';

CREATE TABLE tracksolid.alerts (
    alert_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES tracksolid.alert_rules ON DELETE CASCADE,
    subject         text NOT NULL,          -- imei, feed name, 'backup', spool dir ...
    state           text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acked', 'resolved')),
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    count           integer NOT NULL DEFAULT 1,     -- events grouped into this alert
    payload         jsonb NOT NULL,                 -- the latest event's facts
    notified_at     timestamptz,            -- last message that carried this alert
    notified_count  integer NOT NULL DEFAULT 0,     -- count at that message
    acked_at        timestamptz,
    acked_by        text,
    resolved_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- Deduplication: one open alert per rule and subject; a repeat updates it (count++).
CREATE UNIQUE INDEX alerts_open_uq ON tracksolid.alerts (rule_id, subject) WHERE state = 'open';
CREATE INDEX alerts_rule_time_idx ON tracksolid.alerts (rule_id, last_seen DESC);
CREATE INDEX alerts_time_idx ON tracksolid.alerts (last_seen DESC);

-- Event identities already turned into alerts, for kinds whose source rows are recomputed
-- (geofence visits, out-of-region episodes): each event alerts once, even after an ack.
CREATE TABLE tracksolid.alert_seen (
    rule_id         bigint NOT NULL REFERENCES tracksolid.alert_rules ON DELETE CASCADE,
    event_key       text NOT NULL,
    seen_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, event_key)
);

CREATE TABLE tracksolid.alert_outbox (
    outbox_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid NOT NULL,          -- X-Alert-Id: the receiver's deduplication key
    channel         text NOT NULL CHECK (channel IN ('webhook', 'email')),
    rule_id         bigint REFERENCES tracksolid.alert_rules ON DELETE SET NULL,
    alert_ids       bigint[] NOT NULL,
    recipients      text[] NOT NULL DEFAULT '{}',
    title           text NOT NULL,
    body            jsonb NOT NULL,         -- the webhook JSON; the e-mail is rendered from it
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    given_up_at     timestamptz,            -- ALERT_MAX_ATTEMPTS reached
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, channel)
);
CREATE INDEX alert_outbox_due_idx ON tracksolid.alert_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
-- The read-API lists the messages that carried an alert (alert_ids @> ARRAY[id]).
CREATE INDEX alert_outbox_alert_ids_idx ON tracksolid.alert_outbox USING gin (alert_ids);

CREATE TABLE tracksolid.alert_deliveries (
    delivery_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id       bigint NOT NULL REFERENCES tracksolid.alert_outbox ON DELETE CASCADE,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    ok              boolean NOT NULL,
    status_code     integer,                -- HTTP status / SMTP reply code
    error           text,                   -- never holds a secret
    duration_ms     integer
);
CREATE INDEX alert_deliveries_outbox_idx ON tracksolid.alert_deliveries (outbox_id);

-- The alarm rules read the alarms ingested since their watermark.
CREATE INDEX IF NOT EXISTS alarms_created_at_idx ON tracksolid.alarms (created_at);
