-- A metric's history is read from its index alone (an index-only scan where the table is
-- vacuumed): value and is_nan ride along in the index entries without being part of its order.
-- The same change exists in migrations/sqlite/0010_metric_history_covering_index.sql.
create index metric_history_covering_idx on metric (run_uuid, key, timestamp, step, metric_id) include (value, is_nan);
drop index metric_history_idx;
