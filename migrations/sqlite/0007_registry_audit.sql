-- The registry audit log: one row per alias or stage change (MLflow alias set and delete,
-- transition-stage with the versions it archives, and gated promotions), written in the same
-- transaction as the change. The same table exists in the other dialect's 0007_registry_audit.sql
-- (only the type of `id` differs). Rows are never updated; a renamed or deleted model keeps its
-- history under the name it had. Absent versions are 0 and absent stages '' (the API shows null).

create table registry_audit (
    id           integer primary key autoincrement,
    timestamp    bigint not null,
    actor        text not null,
    name         text not null,
    action       text not null,
    alias        text not null default '',
    version      bigint not null default 0,
    from_version bigint not null default 0,
    to_version   bigint not null default 0,
    from_stage   text not null default '',
    to_stage     text not null default '',
    reason       text not null default ''
);
create index registry_audit_name_idx on registry_audit (name, id);
