-- Agent builds, signed offline by an operator (Ed25519 over a manifest naming the build's
-- SHA-256, size, version and architecture), content-addressed by that SHA-256. Stored in
-- PostgreSQL: every replica serves the same builds without a shared volume or a bucket,
-- backups hold them, and `artifacts.max_bytes` (64 MiB) keeps rows reasonable. Not a
-- tenant's: operators upload them, appliances download them.
CREATE TABLE agent_artifacts (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    version      text NOT NULL,
    arch         text NOT NULL CHECK (arch IN ('x86_64', 'aarch64')),
    size         bigint NOT NULL CHECK (size > 0),
    key_id       text NOT NULL,
    -- The signed manifest as uploaded (the agent checks it again itself).
    signature    text NOT NULL,
    data         bytea NOT NULL,
    uploaded_by  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_artifacts_version_arch UNIQUE (version, arch)
);
-- Builds are large and read in ranges: keep them out of line, uncompressed (a binary does
-- not compress much), so a range read does not decompress the whole value.
ALTER TABLE agent_artifacts ALTER COLUMN data SET STORAGE EXTERNAL;

ALTER TABLE agent_artifacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_access ON agent_artifacts TO hearth_service USING (true) WITH CHECK (true);
