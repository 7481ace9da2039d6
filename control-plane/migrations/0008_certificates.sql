-- Every certificate issued to an appliance: at enrollment and at each renewal. The
-- appliance's current one stays in appliances.cert_serial / cert_not_after; this table is
-- what revocation must cover (an appliance may hold two valid certificates while it
-- switches) and what makes a repeated renewal request answer the same certificate.
CREATE TABLE certificate_issues (
    serial             text PRIMARY KEY,
    appliance_id       uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    tenant_id          uuid NOT NULL,
    -- The agent's id for one renewal (NULL: issued at enrollment).
    renewal_id         uuid,
    -- SHA-256 of the certified public key: a renewal must bring a new key.
    public_key_sha256  bytea NOT NULL,
    -- SHA-256 of the renewal's CSR: the same renewal id with another CSR is refused.
    csr_sha256         bytea,
    certificate_pem    text NOT NULL,
    not_after          timestamptz NOT NULL,
    issued_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX certificate_issues_renewal_idx ON certificate_issues (appliance_id, renewal_id)
    WHERE renewal_id IS NOT NULL;
CREATE INDEX certificate_issues_appliance_idx ON certificate_issues (appliance_id, issued_at);

ALTER TABLE certificate_issues ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON certificate_issues TO hearth_tenant
    USING (tenant_id = NULLIF(current_setting('hearth.tenant_id', true), '')::uuid);
CREATE POLICY service_access ON certificate_issues TO hearth_service USING (true) WITH CHECK (true);
-- The service role's grants come from the default privileges (0004). Customers may read
-- their appliances' certificate history (never anything secret: certificates are public).
GRANT SELECT ON certificate_issues TO hearth_tenant;
