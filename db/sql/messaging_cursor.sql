-- Messaging schema, fifth step (applied as each service's V10).
--
-- The relay reads the outbox between two snapshots instead of claiming and
-- marking every row (two updates per event, each with index maintenance).
-- A row is published once the relay's cursor (outbox_relay) is past it:
-- every row whose writing transaction is visible in the cursor's snapshot
-- `lo`, plus the rows of the window being published (visible in `hi`, not in
-- `lo`) up to (`after_txid`, `after_id`): a window goes out in the order of
-- its rows' transaction ids, then row ids, which one index walks. One relay at a time holds the cursor, under a
-- lease; one cursor update per batch replaces the per-row updates. See
-- db/src/relay.rs.

-- The writing transaction. Rows written before this migration get 0,
-- which every snapshot sees: they are behind the cursor, and those not yet
-- published go to the retry path below.
ALTER TABLE outbox ADD COLUMN txid xid8 NOT NULL DEFAULT '0';
ALTER TABLE outbox ALTER COLUMN txid SET DEFAULT pg_current_xact_id();

-- The retry path: a row the broker refused for what it is (too large,
-- invalid) is set aside with its own backoff (retry_at) while the cursor
-- moves on; a retry that succeeds sets published_at, and a row that keeps
-- failing is parked (parked_at). retry_at doubles as the retry's lease.
ALTER TABLE outbox ADD COLUMN retry_at TIMESTAMPTZ;
UPDATE outbox SET retry_at = now() WHERE published_at IS NULL AND parked_at IS NULL;
ALTER TABLE outbox DROP COLUMN claimed_until;

DROP INDEX outbox_pending;
DROP INDEX outbox_published_at;
CREATE INDEX outbox_txid ON outbox (txid, id);
CREATE INDEX outbox_retry ON outbox (retry_at) WHERE retry_at IS NOT NULL;

CREATE TABLE outbox_relay (
    single       BOOLEAN PRIMARY KEY DEFAULT true CHECK (single),
    lo           pg_snapshot NOT NULL,
    hi           pg_snapshot,
    after_txid   xid8        NOT NULL,
    after_id     BIGINT      NOT NULL DEFAULT 0,
    holder       UUID,
    leased_until TIMESTAMPTZ
);
-- A window starts at (lo's xmin, 0): no row before it can be ahead of lo.
INSERT INTO outbox_relay (lo, after_txid)
SELECT s, pg_snapshot_xmin(s) FROM pg_current_snapshot() AS s;
-- Statistics from the start: the relay's statement joins this one row,
-- and an estimate of hundreds would cost it a JIT compilation.
ANALYZE outbox_relay;

-- Rows waiting to be published (parked rows excluded): what the backlog
-- gauges count and what tests and operators ask for.
CREATE VIEW outbox_pending AS
SELECT o.*
FROM outbox o CROSS JOIN outbox_relay c
WHERE o.parked_at IS NULL
  AND (o.retry_at IS NOT NULL
       OR (o.txid >= pg_snapshot_xmin(c.lo)
           AND NOT pg_visible_in_snapshot(o.txid, c.lo)
           AND NOT (c.hi IS NOT NULL AND pg_visible_in_snapshot(o.txid, c.hi)
                    AND (o.txid, o.id) <= (c.after_txid, c.after_id))));
