-- The lowest and highest value, step and timestamp of each block of 256 consecutive points of a
-- metric, in logging order, kept as points are logged. A chart of a long history reads these
-- (3,907 rows for a million points) instead of scanning every point.
--
-- `value_points` counts the points that are not NaN; a block of NaN points only keeps
-- value_min = 1.7976931348623157e308 and value_max = -1.7976931348623157e308 (the largest
-- doubles), so that min and max fold the next points in without a NULL.
create table metric_block (
    run_uuid      text not null references run (run_uuid),
    key           text not null,
    block         bigint not null,
    points        bigint not null,
    value_points  bigint not null,
    step_min      bigint not null,
    step_max      bigint not null,
    timestamp_min bigint not null,
    timestamp_max bigint not null,
    value_min     double precision not null,
    value_max     double precision not null,
    primary key (run_uuid, key, block)
);

-- The blocks of the points logged before this migration: the n-th point of a (run, key) by
-- metric id goes to block n / 256, as the server numbers them when it logs.
insert into metric_block (run_uuid, key, block, points, value_points, step_min, step_max,
                          timestamp_min, timestamp_max, value_min, value_max)
select run_uuid, key, ordinal / 256, count(*), sum(case when is_nan = 0 then 1 else 0 end),
       min(step), max(step), min(timestamp), max(timestamp),
       coalesce(min(case when is_nan = 0 then value end), 1.7976931348623157e308),
       coalesce(max(case when is_nan = 0 then value end), -1.7976931348623157e308)
from (select run_uuid, key, step, timestamp, value, is_nan,
             row_number() over (partition by run_uuid, key order by metric_id) - 1 as ordinal
      from metric) numbered
group by run_uuid, key, ordinal / 256;
