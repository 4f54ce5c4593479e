-- Tracking schema: experiments, runs and everything logged to a run.
--
-- The same tables exist in migrations/postgres/0001_tracking.sql; only the types differ.
-- Times are integer milliseconds since the epoch, as MLflow sends them.
-- Metric values: SQLite stores a bound NaN as NULL, so NaN is kept as `is_nan = 1` with value 0
-- (MLflow's own layout; an integer rather than a boolean so both backends decode it as i64); +-inf arrive already clamped to +-1.7976931348623157e308.

create table experiment (
    experiment_id     integer primary key autoincrement,
    name              text not null unique,
    artifact_location text not null,
    lifecycle_stage   text not null default 'active',
    creation_time     bigint not null,
    last_update_time  bigint not null
);

create table experiment_tag (
    experiment_id integer not null references experiment (experiment_id),
    key           text not null,
    value         text not null,
    primary key (experiment_id, key)
);

create table run (
    run_uuid        text primary key,
    experiment_id   integer not null references experiment (experiment_id),
    run_name        text not null default '',
    user_id         text not null default '',
    status          text not null default 'RUNNING',
    start_time      bigint not null,
    end_time        bigint,
    artifact_uri    text not null,
    lifecycle_stage text not null default 'active',
    deleted_time    bigint
);
-- Serves the default search order (start_time desc, run_uuid) within an experiment.
create index run_experiment_start_idx on run (experiment_id, start_time desc, run_uuid);

create table param (
    run_uuid text not null references run (run_uuid),
    key      text not null,
    value    text not null,
    primary key (run_uuid, key)
);
-- Serves `params.k = 'v'` filters across runs.
create index param_key_value_idx on param (key, value);

create table tag (
    run_uuid text not null references run (run_uuid),
    key      text not null,
    value    text not null,
    primary key (run_uuid, key)
);
create index tag_key_value_idx on tag (key, value);

-- Every logged point. `metric_id` gives a stable total order for keyset paging of history.
create table metric (
    metric_id      integer primary key autoincrement,
    run_uuid       text not null references run (run_uuid),
    key            text not null,
    value          double precision not null,
    is_nan         integer not null default 0,
    timestamp      bigint not null,
    step           bigint not null default 0,
    dataset_name   text,
    dataset_digest text,
    model_id       text
);
-- History of one key, in MLflow's order (timestamp, step) and keyset-paged by metric_id.
create index metric_history_idx on metric (run_uuid, key, timestamp, step, metric_id);

-- The latest point per (run, key): what runs/get and runs/search show, and what metric
-- filters and order_by read, so they never scan the history. "Latest" is MLflow's rule:
-- the highest step, then the highest timestamp, then the highest value.
create table latest_metric (
    run_uuid  text not null references run (run_uuid),
    key       text not null,
    value     double precision not null,
    is_nan    integer not null default 0,
    timestamp bigint not null,
    step      bigint not null,
    primary key (run_uuid, key)
);
create index latest_metric_key_value_idx on latest_metric (key, value);

create table dataset (
    dataset_uuid  text primary key,
    experiment_id integer not null references experiment (experiment_id),
    name          text not null,
    digest        text not null,
    source_type   text not null default '',
    source        text not null default '',
    schema        text,
    profile       text,
    unique (experiment_id, name, digest)
);

create table run_input (
    run_uuid     text not null references run (run_uuid),
    dataset_uuid text not null references dataset (dataset_uuid),
    tags_json    text not null default '[]',
    primary key (run_uuid, dataset_uuid)
);

-- Logged models (MLflow 3): `m-<32 hex>` ids with their own artifact root.
create table logged_model (
    model_id                  text primary key,
    experiment_id             integer not null references experiment (experiment_id),
    name                      text not null,
    artifact_location         text not null,
    status                    text not null default 'LOGGED_MODEL_PENDING',
    source_run_id             text,
    model_type                text,
    creation_timestamp_ms     bigint not null,
    last_updated_timestamp_ms bigint not null,
    lifecycle_stage           text not null default 'active'
);
create index logged_model_experiment_idx on logged_model (experiment_id, creation_timestamp_ms);

create table logged_model_param (
    model_id text not null references logged_model (model_id),
    key      text not null,
    value    text not null,
    primary key (model_id, key)
);

create table logged_model_tag (
    model_id text not null references logged_model (model_id),
    key      text not null,
    value    text not null,
    primary key (model_id, key)
);

create table run_output (
    run_uuid text not null references run (run_uuid),
    model_id text not null,
    step     bigint not null default 0,
    primary key (run_uuid, model_id)
);

-- Experiment "0" named "Default" exists from the start, as the mlflow client expects.
insert into experiment (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)
values (0, 'Default', 'mlflow-artifacts:/0', 'active', 0, 0);
