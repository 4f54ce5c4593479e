-- Studies, their trials and the worker agents that run them.
--
-- The same tables exist in migrations/sqlite/0005_studies.sql. A study is an experiment plus a
-- spec (JSON); each trial is a run of that experiment. Everything the scheduler decides is a
-- function of these rows (trial params, states and the reports in `trial_report`), so a restarted
-- tracker replays them and makes the same decisions.

create table study (
    name          text primary key,
    experiment_id bigint not null references experiment (experiment_id),
    spec          text not null,
    status        text not null,
    created_time  bigint not null,
    finished_time bigint,
    -- Bumped by every decision; a tracker keeps the study's trials in memory while the version
    -- it loaded is still current, and reloads them when another process changed the study.
    version       bigint not null default 0
);

-- state: queued (waiting for a lease; requeued trials first, by queued_time), running (leased),
-- paused (at an ASHA rung, waiting for promotion), complete, pruned, failed, stopped.
-- lease_id is the fencing token of the current or last attempt; worker_id and lease_expires are
-- set only while the trial is leased.
create table trial (
    study         text not null references study (name),
    number        bigint not null,
    run_uuid      text not null,
    params        text not null,
    state         text not null,
    value         double precision,
    last_step     bigint,
    last_value    double precision,
    checkpoint    text,
    checkpoint_step bigint,
    target_step   bigint,
    attempt       bigint not null default 0,
    lease_id      text,
    worker_id     text,
    lease_expires bigint,
    leased_time   bigint,
    queued_time   bigint,
    failures      bigint not null default 0,
    lost          bigint not null default 0,
    error         text,
    primary key (study, number)
);
create index trial_state_idx on trial (study, state, lease_expires);
create unique index trial_lease_idx on trial (lease_id);
create index trial_worker_idx on trial (worker_id);

-- One row per accepted report, with the decision it got, so a retried report gets the same answer.
create table trial_report (
    study          text not null,
    number         bigint not null,
    step           bigint not null,
    value          double precision not null,
    attempt        bigint not null,
    decision       text not null,
    next_milestone bigint,
    primary key (study, number, step)
);

create table worker (
    worker_id       text primary key,
    status          text not null,
    resources       text not null,
    labels          text not null,
    registered_time bigint not null,
    last_seen       bigint not null,
    quick_failures  bigint not null default 0
);
