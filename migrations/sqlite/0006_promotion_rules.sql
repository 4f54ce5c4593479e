-- Promotion gates: the rules a version must pass before `promote` points an alias at it.
--
-- The same table exists in the other dialect's 0006_promotion_rules.sql. One row per registered
-- model; `rules` is a JSON array of rule texts, in the order they are checked (they were parsed
-- when set). A renamed or deleted model takes its rules along.

create table registered_model_promotion_rules (
    name       text primary key,
    rules      text not null,
    updated_at bigint not null
);
