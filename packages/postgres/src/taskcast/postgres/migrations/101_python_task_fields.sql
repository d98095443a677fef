-- Columns of Taskcast for Python that the original's schema lacks. Versions 1-99 mirror the
-- original's numbered migrations; 100 and up are ours, so the numbers never collide.
-- All columns are nullable: rows written by the original stay valid and readable.

-- Suspension details (the original loses these for archived tasks).
ALTER TABLE taskcast_tasks ADD COLUMN IF NOT EXISTS reason TEXT;
ALTER TABLE taskcast_tasks ADD COLUMN IF NOT EXISTS resume_at BIGINT;
ALTER TABLE taskcast_tasks ADD COLUMN IF NOT EXISTS blocked_request JSONB;

-- Idempotent publishing: the key a publisher sent with the event.
ALTER TABLE taskcast_events ADD COLUMN IF NOT EXISTS idempotency_key TEXT;

-- Some databases migrated by the original lack it.
ALTER TABLE taskcast_events ADD COLUMN IF NOT EXISTS series_acc_field TEXT;

-- Finding the rows of one series (latest-series replacement).
CREATE INDEX IF NOT EXISTS taskcast_events_task_series
  ON taskcast_events (task_id, series_id, idx) WHERE series_id IS NOT NULL;
