-- Fleet rollouts: one change to many appliances, in waves, stopped by its own failures.
--
-- A rollout carries a catalog task or a configuration overlay (`payload`), targets the
-- appliances its `selector` matches, and goes out under its `policy` (waves, gate, abort,
-- retries, timeout, window). An operator's rollout may span tenants (`tenant_id` NULL); a
-- tenant's rollout has its tenant and sees only its own appliances. One row per targeted
-- appliance in rollout_executions; a task rollout's execution runs as a task
-- (`tasks.rollout_id`), through the dispatcher like any other.
CREATE TABLE rollouts (
    id            uuid PRIMARY KEY,
    tenant_id     uuid REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    selector      jsonb NOT NULL,
    dynamic       boolean NOT NULL DEFAULT false,
    payload       jsonb NOT NULL,
    policy        jsonb NOT NULL,
    state         text NOT NULL DEFAULT 'scheduled' CHECK (state IN
                  ('scheduled', 'running', 'paused', 'waiting_for_approval', 'succeeded', 'aborted', 'cancelled')),
    reason        text,
    -- How many waves are open (0 before the start); the open wave is waves_open - 1.
    waves_open    integer NOT NULL DEFAULT 0,
    -- Cumulative executions per wave, fixed when the target is resolved.
    wave_sizes    integer[] NOT NULL DEFAULT '{}',
    start_at      timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollouts_tenant_idx ON rollouts (tenant_id, created_at DESC);
-- The advancer's scan.
CREATE INDEX rollouts_active_idx ON rollouts (start_at) WHERE state IN ('scheduled', 'running', 'paused', 'waiting_for_approval');

CREATE TABLE rollout_executions (
    rollout_id      uuid NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    appliance_id    uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Position in the rollout's (shuffled) order, 1-based; the wave follows from it.
    ordinal         integer NOT NULL,
    wave            integer NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN
                    ('pending', 'in_progress', 'succeeded', 'failed', 'rejected', 'timed_out', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    -- The current attempt's task (task rollouts) or desired version (configuration rollouts).
    task_id         uuid REFERENCES tasks (id) ON DELETE SET NULL,
    config_version  bigint,
    -- A retry waits until then.
    not_before      timestamptz,
    message         text,
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (rollout_id, appliance_id)
);
CREATE INDEX rollout_executions_state_idx ON rollout_executions (rollout_id, state, wave, ordinal);
CREATE INDEX rollout_executions_appliance_idx ON rollout_executions (appliance_id);

ALTER TABLE tasks ADD COLUMN rollout_id uuid REFERENCES rollouts (id) ON DELETE SET NULL;
CREATE INDEX tasks_rollout_idx ON tasks (rollout_id) WHERE rollout_id IS NOT NULL;

-- A configuration rollout's overlay, one more layer of the desired document between the
-- tenant's defaults and the appliance's own overrides (overlays of successive rollouts
-- merged in the order they reached the appliance).
ALTER TABLE appliance_config ADD COLUMN rollout_overlay jsonb NOT NULL DEFAULT '{}'::jsonb;

ALTER TABLE rollouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollout_executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rollouts TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON rollout_executions TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);

-- A tenant creates, reads and steers (pause, resume, approve, cancel) its own rollouts; the
-- advancer (service role) resolves targets and moves executions.
GRANT SELECT, INSERT ON rollouts TO hearth_tenant;
GRANT UPDATE (name, policy, payload, state, reason, updated_at, finished_at, waves_open) ON rollouts TO hearth_tenant;
GRANT SELECT ON rollout_executions TO hearth_tenant;
GRANT UPDATE (state, message, finished_at) ON rollout_executions TO hearth_tenant;
CREATE POLICY service_access ON rollouts TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON rollout_executions TO hearth_service USING (true) WITH CHECK (true);

-- A plan's quota of active rollouts (a tenant's own; operators' rollouts do not count).
ALTER TABLE plans ADD COLUMN rollouts_active integer NOT NULL DEFAULT 5;
