-- Model registry: registered models, their versions, tags and aliases.
--
-- The same tables exist in migrations/postgres/0002_registry.sql. Names are the keys, as in
-- MLflow; a rename updates every table in one transaction. `last_version` keeps version numbers
-- increasing even after the newest version is deleted.

create table registered_model (
    name                   text primary key,
    creation_timestamp     bigint not null,
    last_updated_timestamp bigint not null,
    description            text not null default '',
    user_id                text not null default '',
    last_version           bigint not null default 0
);
create index registered_model_updated_idx on registered_model (last_updated_timestamp);

create table registered_model_tag (
    name  text not null,
    key   text not null,
    value text not null,
    primary key (name, key)
);
create index registered_model_tag_key_idx on registered_model_tag (key, value);

create table model_version (
    name                   text not null,
    version                bigint not null,
    creation_timestamp     bigint not null,
    last_updated_timestamp bigint not null,
    description            text not null default '',
    user_id                text not null default '',
    current_stage          text not null default 'None',
    source                 text not null default '',
    run_id                 text not null default '',
    run_link               text not null default '',
    status                 text not null default 'READY',
    status_message         text not null default '',
    model_id               text not null default '',
    primary key (name, version)
);
create index model_version_run_idx on model_version (run_id);
create index model_version_stage_idx on model_version (name, current_stage, version);

create table model_version_tag (
    name    text not null,
    version bigint not null,
    key     text not null,
    value   text not null,
    primary key (name, version, key)
);
create index model_version_tag_key_idx on model_version_tag (key, value);

create table registered_model_alias (
    name    text not null,
    alias   text not null,
    version bigint not null,
    primary key (name, alias)
);
create index registered_model_alias_version_idx on registered_model_alias (name, version);
