-- 0102 · Poll state of each device, and pushed IMEIs left unregistered by the per-hour cap.
-- `poll_state`: `active` = polled per device; `unknown_to_api` = the API answered 1002
-- ("illegal device": not found / not under the polled accounts) for it, so the per-device
-- jobs leave it out until a device sync sees it listed again (or the daily re-check's
-- `jimi.track.device.detail` answers). `poll_checked_at` = when the API last refused it.
-- docs/ingestion.md, "Devices the API does not know".

ALTER TABLE tracksolid.devices
    ADD COLUMN poll_state text NOT NULL DEFAULT 'active'
        CONSTRAINT devices_poll_state_check CHECK (poll_state IN ('active', 'unknown_to_api')),
    ADD COLUMN poll_state_since timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN poll_checked_at timestamptz;

COMMENT ON COLUMN tracksolid.devices.poll_state IS
    'active | unknown_to_api (the API answered 1002 for it: not polled per device; re-checked daily)';

-- The receiver's per-hour cap counts the devices it auto-registered in the last hour.
CREATE INDEX devices_push_first_seen_idx ON tracksolid.devices (first_seen_at)
    WHERE source = 'push';

-- IMEIs pushed while the per-hour auto-registration cap was reached: their data is stored,
-- but they are not registered for polling (a later push within the cap registers them).
CREATE TABLE tracksolid.push_unregistered (
    imei            text PRIMARY KEY,
    device_name     text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    deliveries      integer NOT NULL DEFAULT 1
);
CREATE INDEX push_unregistered_last_seen_idx ON tracksolid.push_unregistered (last_seen_at);

COMMENT ON TABLE tracksolid.push_unregistered IS
    'Pushed IMEIs not auto-registered because PUSH_AUTOREGISTER_PER_HOUR was reached.';
