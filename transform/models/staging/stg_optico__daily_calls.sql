{#- Optico's totals, one row per (account, day), typed once. -#}
with loaded as (
    select
        *,
        row_number() over (
            partition by account, {{ adapter.quote('date') }}
            order by {{ latest_row_order(source('optico', 'daily_calls')) }}
        ) as copy_rank
    from {{ source('optico', 'daily_calls') }}
)

select
    cast(account as {{ dbt.type_string() }}) as account,
    cast({{ adapter.quote('date') }} as date) as local_date,
    cast(calls as {{ dbt.type_int() }}) as calls,
    cast(duration as {{ dbt.type_int() }}) as duration_seconds,
    cast(revenue as {{ dbt.type_numeric() }}) as revenue
from loaded
where copy_rank = 1
