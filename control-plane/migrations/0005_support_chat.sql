-- The support chat: conversations between a tenant's people and the assistant, their
-- messages, and the tasks the assistant proposed in them (run once the customer confirms).
-- Tenant rows, so row-level security like every tenant table, and the service role's
-- explicit policy (the isolation tests check both).

-- A tenant may let low-risk proposals run without confirmation (NULL: the service's
-- default, `assistant.confirm_low_risk`). High-risk ones always wait.
ALTER TABLE tenants ADD COLUMN assistant_confirm_low_risk boolean;

CREATE TABLE support_conversations (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The appliance the chat was opened about, used when the customer names none.
    appliance_id  uuid REFERENCES appliances (id) ON DELETE SET NULL,
    -- Who opened it: `tenant_user:<e-mail>` or `tenant_key:<prefix>`.
    started_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX support_conversations_tenant_idx ON support_conversations (tenant_id, updated_at DESC);

CREATE TABLE support_messages (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES support_conversations (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- 1, 2, 3… within the conversation: the event stream's cursor.
    seq              integer NOT NULL CHECK (seq > 0),
    role             text NOT NULL CHECK (role IN ('customer', 'assistant')),
    body             text NOT NULL CHECK (length(body) <= 20000),
    -- Assistant messages: which backend answered, and whether the LLM had failed.
    backend          text CHECK (backend IN ('rules', 'ollama')),
    degraded         boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT support_messages_seq_key UNIQUE (conversation_id, seq)
);
CREATE INDEX support_messages_tenant_idx ON support_messages (tenant_id);

CREATE TABLE support_proposals (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES support_conversations (id) ON DELETE CASCADE,
    -- The assistant message that proposed it (one proposal per message at most).
    message_id       uuid NOT NULL CONSTRAINT support_proposals_message_key UNIQUE
                     REFERENCES support_messages (id) ON DELETE CASCADE,
    appliance_id     uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    action           text NOT NULL,
    -- As the catalog validator returned them: what the task will store.
    params           jsonb NOT NULL,
    risk             text NOT NULL CHECK (risk IN ('low', 'high')),
    needs_confirmation boolean NOT NULL,
    -- pending: waits for the customer; confirmed: the task exists (task_id); superseded:
    -- the customer wrote again before confirming, so it can no longer be confirmed.
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'superseded')),
    task_id          uuid REFERENCES tasks (id) ON DELETE SET NULL,
    decided_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX support_proposals_conversation_idx ON support_proposals (conversation_id, status);

ALTER TABLE support_conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE support_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE support_proposals ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON support_conversations TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON support_messages TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON support_proposals TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY service_access ON support_conversations TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON support_messages TO hearth_service USING (true) WITH CHECK (true);
CREATE POLICY service_access ON support_proposals TO hearth_service USING (true) WITH CHECK (true);

-- The service role's grants come from the default privileges (0004). Customer requests:
GRANT SELECT, INSERT ON support_conversations, support_messages, support_proposals TO hearth_tenant;
GRANT UPDATE (updated_at) ON support_conversations TO hearth_tenant;
GRANT UPDATE (status, task_id, decided_at) ON support_proposals TO hearth_tenant;
GRANT UPDATE (assistant_confirm_low_risk) ON tenants TO hearth_tenant;
