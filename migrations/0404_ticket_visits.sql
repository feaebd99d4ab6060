-- Ticket visits (issue #16): which vehicle was at a ticket's site, when and for how long.
-- Filled by the worker's `ticket_visits` job (tracksolid.refresh_ticket_visits in
-- R__visits.sql) from position_history and parking_events; docs/visits.md has the rules.

CREATE TABLE tracksolid.ticket_visits (
    ticket_id       text NOT NULL,
    imei            text NOT NULL,
    arrived_at      timestamptz NOT NULL,      -- first piece of evidence on site
    departed_at     timestamptz NOT NULL,      -- last piece of evidence on site
    on_site_s       integer NOT NULL CHECK (on_site_s >= 0),
    fixes           integer NOT NULL,          -- GPS fixes within the radius
    stop_evidence   boolean NOT NULL,          -- a parking/idling event within the radius
    min_distance_m  real NOT NULL,             -- closest evidence to the ticket's point
    driver_name     text,                      -- the vehicle's driver at arrival
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, imei, arrived_at)
);
-- "is this vehicle on a site now" (nearest vehicles' busy_on): its latest departures
CREATE INDEX ticket_visits_imei_idx ON tracksolid.ticket_visits (imei, departed_at DESC);
CREATE INDEX ticket_visits_arrived_idx ON tracksolid.ticket_visits (arrived_at DESC);
COMMENT ON TABLE tracksolid.ticket_visits IS
    'A vehicle stopped on a ticket''s site: stationary GPS fixes and stops within VISIT_RADIUS_M of the ticket''s '
    'own point, merged while gaps stay under VISIT_MERGE_GAP_S, kept when on site for at least '
    'VISIT_MIN_DWELL_S. Recomputed per ticket by the ticket_visits job (docs/visits.md).';
