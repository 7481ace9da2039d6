-- Fleet CA rotation: which CA signed each certificate, and when an appliance was last asked
-- to renew early (`down/cert/renew`).
--
-- issuer_sha256 is the SHA-256 of the signing CA's certificate (DER), in hex. Rows from before
-- this migration have NULL: they were all signed by the fleet's first CA, and the first
-- rotation fills them in with that CA's fingerprint before anything else is signed.
ALTER TABLE certificate_issues ADD COLUMN issuer_sha256 text;
ALTER TABLE appliances ADD COLUMN cert_issuer_sha256 text;
ALTER TABLE appliances ADD COLUMN renewal_asked_at timestamptz;
