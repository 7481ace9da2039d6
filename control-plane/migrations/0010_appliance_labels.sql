-- Appliance labels (key=value), set by operators and by a tenant for its own appliances.
-- A fleet rollout's selector matches them with `labels @> '{…}'`, which the GIN index
-- answers. Keys under `fleet/` are operators' (the domain layer keeps tenants off them).
ALTER TABLE appliances ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb
    CONSTRAINT appliances_labels_object CHECK (jsonb_typeof(labels) = 'object');
CREATE INDEX appliances_labels_idx ON appliances USING gin (labels jsonb_path_ops);

-- A tenant changes its own appliances' labels and nothing else of them (row-level security
-- keeps it to its own rows).
GRANT UPDATE (labels) ON appliances TO hearth_tenant;
