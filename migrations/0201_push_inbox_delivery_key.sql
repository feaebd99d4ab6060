-- 0201 · Webhook receiver: idempotent push deliveries.
-- `delivery_key` is the SHA-256 of (path, msgType, data) of an accepted delivery. The receiver
-- inserts the inbox row with ON CONFLICT (delivery_key) DO NOTHING and writes the typed rows in
-- the same statement only when the inbox row is new, so a re-delivered push (JIMI retrying
-- after a timeout) or a spool replay after a crash between COMMIT and unlink adds nothing.
-- Rejected bodies (HTTP 400) have no key: each is recorded.
-- `spooled` marks deliveries that waited in the local spool while PostgreSQL was unreachable.
-- Status values of push_inbox.status as the receiver writes them:
--   parsed   every item mapped to its table
--   partial  some items failed; their reasons are in `errors`, the others were stored
--   stored   raw only: an Open-API msgType we do not map, or the typed write failed (reason
--            in `errors`); the payload is kept for a later re-parse
--   rejected the body was malformed (HTTP 400); the body is in `raw_body`

ALTER TABLE tracksolid.push_inbox
    ADD COLUMN delivery_key bytea,
    ADD COLUMN spooled boolean NOT NULL DEFAULT false;

CREATE UNIQUE INDEX push_inbox_delivery_key_uq ON tracksolid.push_inbox (delivery_key);

COMMENT ON COLUMN tracksolid.push_inbox.delivery_key IS
    'SHA-256 of path, msgType and data of an accepted delivery: re-deliveries are ignored';
COMMENT ON COLUMN tracksolid.push_inbox.spooled IS
    'true when the delivery was spooled to disk while PostgreSQL was unreachable';
