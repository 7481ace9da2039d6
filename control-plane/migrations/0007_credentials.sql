-- An e-mail address is unique within a tenant, not across the service: adding a member
-- whose address some other customer uses just works, so the answer tells nothing about
-- other tenants. Sign-in finds the accounts by address (and the tenant when the caller
-- names one).
DROP INDEX tenant_users_email_key;
CREATE UNIQUE INDEX tenant_users_tenant_email_key ON tenant_users (tenant_id, lower(email));
CREATE INDEX tenant_users_email_idx ON tenant_users (lower(email));

-- Failed sign-ins are counted in the control plane's bad-credential limits (per source,
-- per address and source, per address), checked before any password is hashed; an
-- account-wide lock that any stranger could keep closed is gone.
ALTER TABLE tenant_users
    DROP COLUMN failed_logins,
    DROP COLUMN locked_until;
