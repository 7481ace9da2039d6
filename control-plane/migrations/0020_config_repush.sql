-- When a configuration version was last pushed. A version pushed but never answered (no
-- apply report, successful or failed, for it) is pushed again after a while
-- (`dispatch::UNANSWERED_AFTER`): the document, or the appliance's configuration request,
-- can be lost with a connection that dropped right after it (a reconnect storm left a few
-- of 10,000 appliances on the old version until their next connection). Nullable, no
-- default: adding it rewrites nothing; rows pushed before it stay out of the re-push.
ALTER TABLE appliance_config ADD COLUMN pushed_at timestamptz;
-- The pushes still waiting for an answer: a small set, scanned by time.
CREATE INDEX appliance_config_unanswered_idx ON appliance_config (pushed_at)
    WHERE pushed_version IS NOT NULL AND last_apply_version IS DISTINCT FROM pushed_version;
