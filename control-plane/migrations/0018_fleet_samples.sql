-- The fleet's trend for the operator console: each tenant's appliance counts, sampled once
-- a minute by the control plane (every replica tries; the primary key keeps one sample per
-- tenant and minute) and kept for 7 days. Operators read it on the service role only: row-level
-- security with the service role's policy alone, and no grant to hearth_tenant.
CREATE TABLE fleet_samples (
    at          timestamptz NOT NULL,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    online      integer     NOT NULL,
    offline     integer     NOT NULL,
    never_seen  integer     NOT NULL,
    revoked     integer     NOT NULL,
    PRIMARY KEY (tenant_id, at)
);
CREATE INDEX fleet_samples_at_idx ON fleet_samples (at);

ALTER TABLE fleet_samples ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_access ON fleet_samples TO hearth_service USING (true) WITH CHECK (true);
