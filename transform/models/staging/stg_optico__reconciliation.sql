{#- The tap's latest verdict per (account, day), typed once: a day checked again by a later run
    (its lookback days) keeps only its newest check. -#}
with loaded as (
    select
        *,
        row_number() over (
            partition by account, {{ adapter.quote('date') }}
            order by checked_at desc, {{ latest_row_order(source('optico', 'reconciliation')) }}
        ) as check_rank
    from {{ source('optico', 'reconciliation') }}
)

select
    cast(account as {{ dbt.type_string() }}) as account,
    cast({{ adapter.quote('date') }} as date) as local_date,
    cast(status as {{ dbt.type_string() }}) as status,
    cast(differs as {{ dbt.type_string() }}) as differs,
    cast(calls_delivered as {{ dbt.type_int() }}) as calls_delivered,
    cast(calls_optico as {{ dbt.type_int() }}) as calls_optico,
    cast(duration_delivered as {{ dbt.type_int() }}) as duration_seconds_delivered,
    cast(duration_optico as {{ dbt.type_int() }}) as duration_seconds_optico,
    cast(revenue_delivered as {{ dbt.type_numeric() }}) as revenue_delivered,
    cast(revenue_optico as {{ dbt.type_numeric() }}) as revenue_optico,
    cast(checked_at as {{ dbt.type_timestamp() }}) as checked_at
from loaded
where check_rank = 1
