-- Operators and customers: plans (the quotas the rate limiter reads), tenant status,
-- operator tokens with roles, tenant users with password sign-in and short-lived sessions,
-- the audit log, and appliance revocation (the certificate revocation list's contents).
--
-- Isolation, twice: the application no longer runs as the tables' owner. Every connection
-- assumes one of two roles before it touches a table:
--   hearth_service  system paths (ingest, dispatch, sweeps, enrollment, operators): a
--                   `service_access` policy per table, visible here, is its only way in;
--   hearth_tenant   customer requests: only rows of the tenant set in hearth.tenant_id.
-- The login role itself (NOINHERIT, see docs/architecture.md) has no privileges at all.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hearth_service') THEN
        CREATE ROLE hearth_service NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The migrating role (the owner) may assume the service role too.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'hearth_service', 'MEMBER') THEN
        EXECUTE format('GRANT hearth_service TO %I', current_user);
    END IF;
EXCEPTION WHEN unique_violation THEN
    NULL;
END
$$;

CREATE TABLE plans (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL CONSTRAINT plans_name_key UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    -- Tenant API requests: sustained per minute, and how many may come at once (the bucket).
    api_per_minute        integer NOT NULL CHECK (api_per_minute > 0),
    api_burst             integer NOT NULL CHECK (api_burst > 0),
    -- Support assistant messages (each costs an LLM call).
    assistant_per_hour    integer NOT NULL CHECK (assistant_per_hour > 0),
    assistant_burst       integer NOT NULL CHECK (assistant_burst > 0),
    -- MQTT messages ingested per appliance.
    mqtt_per_minute       integer NOT NULL CHECK (mqtt_per_minute > 0),
    mqtt_burst            integer NOT NULL CHECK (mqtt_burst > 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenants
    ADD COLUMN status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    ADD COLUMN plan_id    uuid REFERENCES plans (id) ON DELETE RESTRICT,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX tenants_name_idx ON tenants (lower(name));

ALTER TABLE api_keys
    ADD COLUMN name        text NOT NULL DEFAULT 'default' CHECK (length(name) BETWEEN 1 AND 100),
    ADD COLUMN created_by  text;

ALTER TABLE appliances
    ADD COLUMN revoked_at  timestamptz;

-- Operators: people or scripts running the service. Tokens `hearth_ot_…`, SHA-256 stored.
CREATE TABLE operator_tokens (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role        text NOT NULL CHECK (role IN ('admin', 'support', 'viewer')),
    token_hash  bytea NOT NULL CONSTRAINT operator_tokens_token_hash_key UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    revoked_at  timestamptz
);

-- Customers' people: owners manage members and API keys of their own tenant.
CREATE TABLE tenant_users (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email            text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    role             text NOT NULL CHECK (role IN ('owner', 'member')),
    -- argon2id, PHC string.
    password_hash    text NOT NULL,
    failed_logins    integer NOT NULL DEFAULT 0,
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_login_at    timestamptz
);
-- One account per e-mail address across the service: sign-in needs no tenant name.
CREATE UNIQUE INDEX tenant_users_email_key ON tenant_users (lower(email));
CREATE INDEX tenant_users_tenant_idx ON tenant_users (tenant_id);

-- Sign-in sessions: `hearth_st_…` bearer tokens, SHA-256 stored, short-lived.
CREATE TABLE user_sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES tenant_users (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX user_sessions_user_idx ON user_sessions (user_id);
CREATE INDEX user_sessions_expiry_idx ON user_sessions (expires_at);

-- Every change by an operator, a customer or the assistant, appended, never changed.
-- tenant_id has no foreign key: the trail outlives a deleted tenant.
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    tenant_id    uuid,
    -- operator | tenant_key | tenant_user | assistant | cli | system
    actor_kind   text NOT NULL,
    actor_id     text,
    actor_name   text,
    -- e.g. tenant.create, api_key.issue, task.create, config.update, appliance.revoke
    action       text NOT NULL,
    target_kind  text NOT NULL,
    target_id    text,
    before       jsonb,
    after        jsonb,
    request_id   text
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Revoked appliance certificates (the CRL's contents). No foreign keys: a revocation must
-- outlive the appliance and its tenant, or a deleted tenant's boxes could connect again.
CREATE TABLE certificate_revocations (
    serial        text PRIMARY KEY,
    appliance_id  uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    revoked_at    timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL
);

-- The CRL's sequence: each issued list gets the next number and a this-update strictly
-- later than the previous one (a TLS stack keeps the newest of two lists by this-update).
CREATE TABLE crl_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    number        bigint NOT NULL,
    this_update   timestamptz NOT NULL
);

-- Row-level security on the new tenant tables.
ALTER TABLE tenant_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE certificate_revocations ENABLE ROW LEVEL SECURITY;
-- Tables without tenant rows get RLS too, so that only the policies below open them.
ALTER TABLE plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE crl_state ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenant_users TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON user_sessions TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON audit_log TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON certificate_revocations TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
-- A tenant reads its own plan's quotas.
CREATE POLICY tenant_plan ON plans TO hearth_tenant
    USING (id = (SELECT plan_id FROM tenants WHERE id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid));

-- The service role's way in: one explicit policy per table.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'appliances', 'enrollment_tokens', 'presence_events',
                             'tasks', 'task_events', 'tenant_config', 'appliance_config', 'plans',
                             'operator_tokens', 'tenant_users', 'user_sessions', 'audit_log',
                             'certificate_revocations', 'crl_state']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY service_access ON %I TO hearth_service USING (true) WITH CHECK (true)', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO hearth_service', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO hearth_service;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO hearth_service;
-- Tables and sequences later migrations create get the same grants; each still needs its
-- RLS and its service_access policy (the isolation tests find tables that lack them).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO hearth_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO hearth_service;

-- What customer requests may do with the new tables (and with API keys now that owners
-- manage them). Columns a tenant may change are listed; the rest is the service's.
GRANT SELECT (id, tenant_id, name, prefix, created_at, created_by, revoked_at), INSERT ON api_keys TO hearth_tenant;
GRANT UPDATE (revoked_at) ON api_keys TO hearth_tenant;
GRANT SELECT, INSERT, DELETE ON tenant_users TO hearth_tenant;
GRANT UPDATE (password_hash, role) ON tenant_users TO hearth_tenant;
GRANT SELECT, DELETE ON user_sessions TO hearth_tenant;
GRANT INSERT ON audit_log TO hearth_tenant;
GRANT SELECT ON plans TO hearth_tenant;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO hearth_tenant;
