-- Webhooks on registry alias and stage changes, and their deliveries.
--
-- The same tables exist in the other dialect's 0008_webhooks.sql (only the type of the `id`
-- columns differs). A webhook belongs to one registered model (`name`) or to all (`name` = '').
-- Its secret is kept as given, since the server signs every body with it (HMAC-SHA256).
--
-- Deliveries are an outbox: the change that triggers one inserts it in its own transaction, and
-- a background task POSTs it, recording each attempt, until the receiver answers 2xx or the
-- attempts run out. `state` is pending, delivered, failed or cancelled (webhook deleted).

create table webhook (
    id         text primary key,
    name       text not null default '',
    url        text not null,
    secret     text not null,
    created_at bigint not null,
    created_by text not null default ''
);
create index webhook_name_idx on webhook (name);

create table webhook_delivery (
    id              bigserial primary key,
    webhook_id      text not null,
    audit_id        bigint not null,
    event           text not null,
    payload         text not null,
    state           text not null default 'pending',
    attempts        bigint not null default 0,
    next_attempt_at bigint not null,
    created_at      bigint not null,
    updated_at      bigint not null
);
create index webhook_delivery_due_idx on webhook_delivery (state, next_attempt_at);
create index webhook_delivery_hook_idx on webhook_delivery (webhook_id, id);

create table webhook_attempt (
    id          bigserial primary key,
    delivery_id bigint not null,
    attempt     bigint not null,
    started_at  bigint not null,
    duration_ms bigint not null,
    status_code bigint not null default 0,
    error       text not null default ''
);
create index webhook_attempt_delivery_idx on webhook_attempt (delivery_id, attempt);
