-- The public key configuration secrets are sealed to for each appliance (hearth_protocol::sealed):
-- the P-256 key of its certificate, as a SEC1 uncompressed point (65 bytes). Set at
-- enrollment when the agent says it can open sealed values; NULL for appliances enrolled
-- before, whose documents with secrets then travel at QoS 0 and are never queued by the
-- broker. A certificate renewed with a new key replaces it (db::appliances::set_sealing_key).
ALTER TABLE appliances ADD COLUMN sealing_key bytea
    CONSTRAINT appliances_sealing_key_len CHECK (octet_length(sealing_key) = 65);
