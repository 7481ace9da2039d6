-- The assistant proposes a plan: several tasks in one message, numbered 1, 2, 3… in the
-- order the customer asked for them, confirmed together or one by one. Each step keeps
-- what it does in the customer's words and language (`summary`, `language`: en, de, es),
-- for the chat to show instead of the action id, and to say the outcome in.
ALTER TABLE support_proposals DROP CONSTRAINT support_proposals_message_key;
ALTER TABLE support_proposals
    ADD COLUMN step integer NOT NULL DEFAULT 1 CHECK (step >= 1),
    ADD COLUMN summary text NOT NULL DEFAULT '',
    ADD COLUMN language text NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'de', 'es')),
    ADD CONSTRAINT support_proposals_message_step_key UNIQUE (message_id, step);
