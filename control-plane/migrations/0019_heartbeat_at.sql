-- The newest heartbeat's own time (its `sent_at`), written with every heartbeat. The
-- heartbeat's metrics (jsonb) and their `metrics_at` are written at most every
-- `ingest.metrics_every_s` seconds per appliance (and at once after a reboot or an agent
-- update): parsing the jsonb was a third of PostgreSQL's CPU per heartbeat, and the facts it
-- holds (uptime, load, memory, disk) need not be fresher than that. `last_seen` (when the
-- control plane last heard from the appliance) is still written by every heartbeat.
-- Nullable, no default, no index: adding it rewrites nothing, and a heartbeat's update stays
-- HOT. Rows get it with their next heartbeat.
ALTER TABLE appliances ADD COLUMN heartbeat_at timestamptz;
