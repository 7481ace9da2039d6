-- Hearth's first schema: tenants, their API keys, appliances with their latest state,
-- enrollment tokens, and presence history. Every customer-owned table carries tenant_id
-- and row-level security for the role hearth_tenant, which tenant-scoped API requests
-- assume (SET LOCAL ROLE) for the length of their transaction.

-- The role is cluster-wide: an operator may have created it already (then the service
-- role needs no CREATEROLE), and parallel test databases may race to create it, so both
-- "already exists" errors are tolerated.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hearth_tenant') THEN
        CREATE ROLE hearth_tenant NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- A non-superuser service role must be a member of hearth_tenant to SET ROLE to it.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'hearth_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT hearth_tenant TO %I', current_user);
    END IF;
EXCEPTION WHEN unique_violation THEN
    NULL;
END
$$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash    bytea NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE,
    -- The first characters, so a leaked key can be matched to its row.
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE appliances (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    enrolled_at     timestamptz,
    cert_serial     text,
    cert_not_after  timestamptz,
    -- Presence: never_seen until the first message; then online/offline.
    status          text NOT NULL DEFAULT 'never_seen'
                    CHECK (status IN ('never_seen', 'online', 'offline')),
    status_since    timestamptz,
    last_seen       timestamptz,
    -- The MQTT connection the current presence belongs to (see hearth_protocol::SessionId).
    session_id      uuid,
    -- Latest heartbeat.
    agent_version   text,
    boot_id         uuid,
    heartbeat_seq   bigint,
    metrics         jsonb,
    metrics_at      timestamptz,
    CONSTRAINT appliances_tenant_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX appliances_tenant_id_idx ON appliances (tenant_id, id);
-- The sweeper's scan: online appliances by last_seen.
CREATE INDEX appliances_online_last_seen_idx ON appliances (last_seen) WHERE status = 'online';

CREATE TABLE enrollment_tokens (
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash    bytea PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    appliance_id  uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX enrollment_tokens_appliance_idx ON enrollment_tokens (appliance_id);

CREATE TABLE presence_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    appliance_id  uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    status        text NOT NULL CHECK (status IN ('online', 'offline')),
    -- status_message | heartbeat | missed_heartbeats
    reason        text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX presence_events_appliance_idx ON presence_events (appliance_id, id);

-- Row-level security: the tenant is the transaction-local setting hearth.tenant_id.
-- An unset or empty setting matches no row.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE appliances ENABLE ROW LEVEL SECURITY;
ALTER TABLE enrollment_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE presence_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenants TO hearth_tenant
    USING (id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON api_keys TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON appliances TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON enrollment_tokens TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON presence_events TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);

-- What a tenant-scoped request may do today: read its own tenant, appliances and history.
GRANT USAGE ON SCHEMA public TO hearth_tenant;
GRANT SELECT ON tenants, appliances, presence_events TO hearth_tenant;
