{#- Every call, with what reports group and filter by: local calendar, outcome, duration bucket,
    and whether it is the caller's first call. -#}
with calls as (
    select * from {{ ref('stg_optico__calls') }}
),

enriched as (
    select
        calls.*,
        cast(started_at_local as date) as local_date,
        cast({{ dbt.date_trunc('week', 'started_at_local') }} as date) as local_week,
        cast({{ dbt.date_trunc('month', 'started_at_local') }} as date) as local_month,
        cast(extract(hour from started_at_local) as {{ dbt.type_int() }}) as local_hour,
        cast(extract(isodow from started_at_local) as {{ dbt.type_int() }}) as local_weekday,
        case
            when caller is not null then row_number() over (
                partition by account, caller order by started_at, call_id
            )
        end as caller_call_number
    from calls
)

select
    account,
    call_id,
    started_at,
    started_at_local,
    local_date,
    local_week,
    local_month,
    local_hour,
    local_weekday,
    case local_weekday
        when 1 then 'Monday'
        when 2 then 'Tuesday'
        when 3 then 'Wednesday'
        when 4 then 'Thursday'
        when 5 then 'Friday'
        when 6 then 'Saturday'
        when 7 then 'Sunday'
    end as local_weekday_name,
    caller,
    caller_call_number,
    coalesce(caller_call_number = 1, false) as is_first_call_of_caller,
    tracking_number,
    destination_number,
    trigger_type,
    case trigger_type
        when 1 then 'normal'
        when 2 then 'call back'
        when 3 then 'automatic rule'
        when 4 then 'manual invitation'
    end as trigger_name,
    source,
    referer,
    keyword,
    url,
    status,
    outcome,
    coalesce(outcome = 'answered', false) as is_answered,
    coalesce(outcome = 'missed', false) as is_missed,
    coalesce(outcome = 'busy', false) as is_busy,
    duration_seconds,
    case
        when duration_seconds is null then null
        when duration_seconds = 0 then '0 s'
        when duration_seconds < 30 then '1-29 s'
        when duration_seconds < 60 then '30-59 s'
        when duration_seconds < 180 then '1-3 min'
        when duration_seconds < 600 then '3-10 min'
        else '10 min and more'
    end as duration_bucket,
    revenue,
    keypad,
    is_redirect,
    is_expired_redirect,
    client_data,
    visit_id
from enriched
