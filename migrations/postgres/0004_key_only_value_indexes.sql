-- Index tag and param keys, not their values.
--
-- A value index refuses long values on Postgres (a b-tree entry is limited to about 2.7 kB), while
-- MLflow accepts params of 6000 and tags of 8000 characters, such as a run's markdown description
-- in `mlflow.note.content`. Searches reach params and tags through the owning run or model, so
-- an index on the key serves them. The same change is made on SQLite to keep the schemas alike.
drop index param_key_value_idx;
create index param_key_idx on param (key);
drop index tag_key_value_idx;
create index tag_key_idx on tag (key);
drop index registered_model_tag_key_idx;
create index registered_model_tag_key_only_idx on registered_model_tag (key);
drop index model_version_tag_key_idx;
create index model_version_tag_key_only_idx on model_version_tag (key);
