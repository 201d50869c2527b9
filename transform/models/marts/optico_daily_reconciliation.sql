{#- The calls loaded per account and local day against Optico's own daily totals (daily_calls).
    A day present on one side only counts zero on the other. -#}
with counted as (
    select
        account,
        local_date,
        count(*) as calls,
        coalesce(sum(duration_seconds), 0) as duration_seconds,
        coalesce(sum(revenue), 0) as revenue
    from {{ ref('optico_calls') }}
    group by account, local_date
),

reported as (
    select * from {{ ref('stg_optico__daily_calls') }}
),

latest as (
    select account, max(local_date) as latest_date from reported group by account
)

select
    coalesce(counted.account, reported.account) as account,
    coalesce(counted.local_date, reported.local_date) as local_date,
    coalesce(counted.calls, 0) as calls_loaded,
    coalesce(reported.calls, 0) as calls_reported,
    coalesce(counted.duration_seconds, 0) as duration_seconds_loaded,
    coalesce(reported.duration_seconds, 0) as duration_seconds_reported,
    coalesce(counted.revenue, 0) as revenue_loaded,
    coalesce(reported.revenue, 0) as revenue_reported,
    reported.account is not null as has_daily_total,
    coalesce(coalesce(counted.local_date, reported.local_date) = latest.latest_date, false) as is_latest_day
from counted
full outer join reported
    on counted.account = reported.account and counted.local_date = reported.local_date
left join latest
    on latest.account = coalesce(counted.account, reported.account)
