-- Operator accounts for the web console: a name, a role, an argon2id password and an
-- optional TOTP second factor; console sessions are cookies whose SHA-256 is stored here.
-- Operator tokens (operator_tokens) stay, for automation.
CREATE TABLE operator_accounts (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CONSTRAINT operator_accounts_name_key UNIQUE
                    CHECK (length(name) BETWEEN 1 AND 100),
    role            text NOT NULL CHECK (role IN ('admin', 'support', 'viewer')),
    -- argon2id, PHC string.
    password_hash   text NOT NULL,
    -- The TOTP key (RFC 6238), sealed with secrets.key (AES-256-GCM, the account id as
    -- associated data). Pending until the first code is confirmed.
    totp_sealed     text,
    totp_enabled    boolean NOT NULL DEFAULT false,
    -- The last time step a code was accepted for: a code is good once.
    totp_last_step  bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    last_login_at   timestamptz,
    disabled_at     timestamptz
);

CREATE TABLE operator_sessions (
    token_hash    bytea PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES operator_accounts (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX operator_sessions_account_idx ON operator_sessions (account_id);
CREATE INDEX operator_sessions_expiry_idx ON operator_sessions (expires_at);

-- The service role only (customers never see operators).
ALTER TABLE operator_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_access ON operator_accounts TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON operator_sessions TO hearth_service USING (true) WITH CHECK (true);
