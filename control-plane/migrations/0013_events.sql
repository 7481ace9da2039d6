-- Events and webhooks (docs/architecture.md, "Events and webhooks").
--
-- `events` is the outbox: a row is written in the same transaction as the change it tells
-- of. Changes that have a table of their own tell through the triggers below, so every
-- writer (ingest, sweepers, API, CLI, rollout advancer) emits events without knowing;
-- statement-level triggers over transition tables keep a batch one insert per statement.
-- `position` is the readers' cursor, given after commit by the sequencer (one replica at a
-- time), so a position is never handed out while a smaller one could still appear.
CREATE TABLE events (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    position      bigint UNIQUE,
    type          text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),
    version       integer NOT NULL DEFAULT 1,
    -- NULL: a fleet-wide event, seen by operators only.
    tenant_id     uuid REFERENCES tenants (id) ON DELETE CASCADE,
    appliance_id  uuid,
    data          jsonb NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE event_position AS bigint;
-- The sequencer's scan.
CREATE INDEX events_unsequenced_idx ON events (seq) WHERE position IS NULL;
CREATE INDEX events_tenant_idx ON events (tenant_id, position);
CREATE INDEX events_at_idx ON events (at);

-- Per-tenant alert rules; a tenant without a row gets the defaults in the code
-- (domain::events::AlertRules::default).
CREATE TABLE alert_rules (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    offline_minutes  integer NOT NULL CHECK (offline_minutes BETWEEN 1 AND 10080),
    drift_minutes    integer NOT NULL CHECK (drift_minutes BETWEEN 1 AND 10080),
    task_failed      boolean NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Open alerts, one per appliance and kind: raised once, resolved once.
CREATE TABLE alerts (
    appliance_id  uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('appliance_offline', 'config_drift', 'certificate_expiring')),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- What the alert is about (the certificate's serial for certificate_expiring).
    subject       text NOT NULL DEFAULT '',
    opened_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (appliance_id, kind)
);

-- Since when an appliance's desired configuration has not been applied (NULL: converged).
ALTER TABLE appliance_config ADD COLUMN drift_since timestamptz;

CREATE TABLE webhook_endpoints (
    id                   uuid PRIMARY KEY,
    -- NULL: an operator's fleet-wide endpoint (every tenant's events and the fleet's own).
    tenant_id            uuid REFERENCES tenants (id) ON DELETE CASCADE,
    url                  text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    description          text NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    event_types          text[] NOT NULL,
    -- whsec_ secrets, AES-256-GCM with secrets.key (the endpoint id as associated data).
    secret_enc           text NOT NULL,
    -- During a rotation, the previous secret still signs until previous_until.
    previous_secret_enc  text,
    previous_until       timestamptz,
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    disabled_at          timestamptz,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, created_at);

CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_seq        bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    -- The endpoint's tenant (row-level security), NULL for a fleet-wide endpoint.
    tenant_id        uuid,
    -- Deliveries with the same key reach the endpoint in position order (the appliance).
    order_key        uuid,
    position         bigint NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Held by the replica attempting it until then.
    lease_until      timestamptz,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_latency_ms  integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_seq)
);
-- The deliverer's scan, per endpoint.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at, position)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, order_key, position)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_seq);

-- quota.exhausted is told at most once an hour per tenant and quota.
CREATE TABLE quota_notices (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    quota       text NOT NULL,
    last_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, quota)
);

ALTER TABLE plans ADD COLUMN webhook_endpoints integer NOT NULL DEFAULT 10 CHECK (webhook_endpoints > 0);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota_notices ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON alert_rules TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON alerts TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON webhook_endpoints TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON webhook_deliveries TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON quota_notices TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY service_access ON events TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON alert_rules TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON alerts TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON webhook_endpoints TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON webhook_deliveries TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON quota_notices TO hearth_service USING (true) WITH CHECK (true);

-- Customers read their events, alerts and delivery log, and manage their alert rules and
-- endpoints (secrets go in encrypted; the columns are readable because they hold only
-- ciphertext, but the API never returns them). Replays and re-enabling touch deliveries.
GRANT SELECT ON events, alerts TO hearth_tenant;
GRANT SELECT, INSERT, UPDATE ON alert_rules TO hearth_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints TO hearth_tenant;
GRANT SELECT ON webhook_deliveries TO hearth_tenant;
GRANT UPDATE (state, attempts, next_attempt_at, lease_until) ON webhook_deliveries TO hearth_tenant;
-- Events written by a tenant's own transaction (cancelling a task, pausing a rollout) go
-- through the triggers below, which run as the tables' owner: customers never insert events.

-- The triggers. SECURITY DEFINER: they run as the owner of the tables (who is not subject to
-- row-level security), with a fixed search_path, and only ever insert into events.
CREATE FUNCTION events_from_presence() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO events (type, tenant_id, appliance_id, data, at)
    SELECT 'appliance.' || n.status, n.tenant_id, n.appliance_id,
           jsonb_build_object('appliance_id', n.appliance_id, 'name', a.name, 'reason', n.reason), n.at
    FROM new_rows n JOIN appliances a ON a.id = n.appliance_id
    ORDER BY n.id;
    RETURN NULL;
END $$;
CREATE TRIGGER events_from_presence AFTER INSERT ON presence_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_from_presence();

CREATE FUNCTION events_from_tasks() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    WITH finished AS (
        SELECT n.*, a.name AS appliance_name FROM new_rows n
        JOIN old_rows o ON o.id = n.id
        JOIN appliances a ON a.id = n.appliance_id
        WHERE n.status IS DISTINCT FROM o.status
          AND n.status IN ('succeeded', 'failed', 'timed_out', 'rejected', 'cancelled')
    ), told AS (
        SELECT f.*, jsonb_build_object('task_id', f.id, 'appliance_id', f.appliance_id, 'appliance_name', f.appliance_name,
               'action', f.action, 'status', f.status, 'message', f.message, 'rollout_id', f.rollout_id) AS data
        FROM finished f
    )
    INSERT INTO events (type, tenant_id, appliance_id, data)
    SELECT 'task.' || t.status, t.tenant_id, t.appliance_id, t.data FROM told t
    UNION ALL
    -- alert.task_failed, unless the tenant turned it off.
    SELECT 'alert.task_failed', t.tenant_id, t.appliance_id, t.data FROM told t
    LEFT JOIN alert_rules r ON r.tenant_id = t.tenant_id
    WHERE t.status IN ('failed', 'timed_out') AND COALESCE(r.task_failed, true);
    RETURN NULL;
END $$;
CREATE TRIGGER events_from_tasks AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_from_tasks();

CREATE FUNCTION events_from_config() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO events (type, tenant_id, appliance_id, data)
    SELECT CASE WHEN n.last_apply_outcome = 'succeeded' THEN 'config.applied' ELSE 'config.failed' END,
           n.tenant_id, n.appliance_id,
           jsonb_build_object('appliance_id', n.appliance_id, 'version', n.last_apply_version,
                              'desired_version', n.desired_version, 'message', n.last_apply_message)
    FROM new_rows n JOIN old_rows o ON o.appliance_id = n.appliance_id
    WHERE n.last_apply_at IS DISTINCT FROM o.last_apply_at AND n.last_apply_at IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER events_from_config AFTER UPDATE ON appliance_config
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_from_config();

-- drift_since follows every write of a row.
CREATE FUNCTION config_drift_since() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.desired_version > COALESCE(NEW.applied_version, 0) THEN
        -- An update keeps the row's drift_since (NEW carries it unless the update sets it).
        NEW.drift_since := COALESCE(NEW.drift_since, now());
    ELSE
        NEW.drift_since := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER config_drift_since BEFORE INSERT OR UPDATE ON appliance_config
    FOR EACH ROW EXECUTE FUNCTION config_drift_since();
UPDATE appliance_config SET drift_since = updated_at WHERE desired_version > COALESCE(applied_version, 0);

CREATE FUNCTION events_from_certificates() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO events (type, tenant_id, appliance_id, data)
    SELECT 'certificate.renewed', n.tenant_id, n.appliance_id,
           jsonb_build_object('appliance_id', n.appliance_id, 'serial', n.serial, 'not_after', n.not_after)
    FROM new_rows n WHERE n.renewal_id IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER events_from_certificates AFTER INSERT ON certificate_issues
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_from_certificates();

CREATE FUNCTION events_from_rollouts() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO events (type, tenant_id, data)
    SELECT x.type, n.tenant_id,
           jsonb_build_object('rollout_id', n.id, 'name', n.name, 'state', n.state, 'wave', n.waves_open,
                              'waves', cardinality(n.wave_sizes), 'reason', n.reason)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN n.state IS DISTINCT FROM o.state THEN
                CASE WHEN n.state = 'running' AND o.state = 'scheduled' THEN 'rollout.started'
                     WHEN n.state = 'running' THEN 'rollout.resumed'
                     ELSE 'rollout.' || n.state END
            WHEN n.waves_open > o.waves_open AND n.waves_open > 1 THEN 'rollout.wave_started'
        END AS type
    ) x
    WHERE x.type IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER events_from_rollouts AFTER UPDATE ON rollouts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_from_rollouts();

CREATE FUNCTION events_from_tenants() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO events (type, tenant_id, data)
    SELECT CASE WHEN n.status = 'suspended' THEN 'tenant.suspended' ELSE 'tenant.resumed' END, n.id,
           jsonb_build_object('tenant_id', n.id, 'name', n.name)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status;
    RETURN NULL;
END $$;
CREATE TRIGGER events_from_tenants AFTER UPDATE ON tenants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_from_tenants();
