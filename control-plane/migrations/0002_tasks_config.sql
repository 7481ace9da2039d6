-- Catalog tasks with their event logs, and desired configuration (tenant defaults plus
-- per-appliance overrides, versioned, with what the appliance last applied).

CREATE TABLE tasks (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    appliance_id  uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    action        text NOT NULL,
    params        jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN
                  ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'rejected')),
    message       text,
    stats         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deadline      timestamptz NOT NULL,
    dispatched_at timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz
);
CREATE INDEX tasks_appliance_idx ON tasks (appliance_id, created_at DESC);
CREATE INDEX tasks_tenant_idx ON tasks (tenant_id, created_at DESC);
-- The dispatcher's and the timeout sweep's scans.
CREATE INDEX tasks_queued_idx ON tasks (created_at) WHERE status = 'queued';
CREATE INDEX tasks_open_deadline_idx ON tasks (deadline) WHERE status IN ('queued', 'dispatched', 'running');

CREATE TABLE task_events (
    task_id    uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    task       text,
    message    text NOT NULL,
    at         timestamptz NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE tenant_config (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- Secrets inside are {"$encrypted": "…"} (AES-256-GCM), never plain text.
    defaults    jsonb NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE appliance_config (
    appliance_id     uuid PRIMARY KEY REFERENCES appliances (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    overrides        jsonb NOT NULL DEFAULT '{}',
    desired_version  bigint NOT NULL DEFAULT 1,
    -- The version last sent down; NULL means "send it (again)".
    pushed_version   bigint,
    -- The last version the appliance applied successfully…
    applied_version  bigint,
    -- …and its last attempt, successful or not.
    last_apply_version  bigint,
    last_apply_outcome  text,
    last_apply_message  text,
    last_apply_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appliance_config_push_idx ON appliance_config (appliance_id)
    WHERE pushed_version IS NULL OR pushed_version < desired_version;

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_config ENABLE ROW LEVEL SECURITY;
ALTER TABLE appliance_config ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tasks TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON task_events TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON tenant_config TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON appliance_config TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);

-- Tenant requests create and cancel tasks, read their logs, and edit their configuration.
GRANT SELECT, INSERT ON tasks TO hearth_tenant;
GRANT UPDATE (status, finished_at, message) ON tasks TO hearth_tenant;
GRANT SELECT ON task_events TO hearth_tenant;
GRANT SELECT, INSERT, UPDATE ON tenant_config, appliance_config TO hearth_tenant;
