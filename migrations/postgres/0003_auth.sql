-- API tokens for bearer and basic authentication.
--
-- The same table exists in migrations/sqlite/0003_auth.sql. Only a SHA-256 hash of each
-- secret is stored; secrets are 256-bit random strings, so a fast hash is safe. A revoked token
-- keeps its row (with `revoked_at`) so that `tracker token list` shows what happened.

create table api_token (
    token_id    text primary key,
    name        text not null,
    scope       text not null,
    secret_hash text not null,
    created_at  bigint not null,
    revoked_at  bigint
);
create index api_token_name_idx on api_token (name);
