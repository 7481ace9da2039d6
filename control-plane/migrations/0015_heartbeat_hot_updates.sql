-- A heartbeat rewrites its appliance's row (last_seen, heartbeat_seq, metrics). When no
-- indexed column changes and the row's page has room, PostgreSQL makes that a HOT update:
-- the new version goes beside the old one on the same page and no index is touched. Two
-- things prevented it: the sweeper's index on last_seen (changed by every heartbeat) and
-- pages filled to the brim.
--
-- The sweeper now finds online appliances through an index on id limited to them (status
-- changes only on a transition) and checks last_seen on the row; and each page keeps 30 %
-- free for the next versions of its rows. The fill factor applies to pages written from now
-- on: an existing table gets it throughout with `VACUUM FULL appliances` in a quiet hour.
DROP INDEX appliances_online_last_seen_idx;
CREATE INDEX appliances_online_idx ON appliances (id) WHERE status = 'online';
ALTER TABLE appliances SET (fillfactor = 70);
