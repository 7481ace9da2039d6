-- The webhook deliveries queue grows by thousands of rows in a second (an offline storm) and
-- drains: its statistics must follow, or the deliverer's claim is planned for the empty table
-- it was. Analysed after 500 changed rows plus 2 %, vacuumed after 1,000 plus 5 %.
ALTER TABLE webhook_deliveries SET (autovacuum_analyze_threshold = 500, autovacuum_analyze_scale_factor = 0.02,
                                    autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.05);
