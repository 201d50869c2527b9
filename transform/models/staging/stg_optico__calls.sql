{#- One row per (account, call_id), typed and renamed once, whatever the load method. -#}
with loaded as (
    select
        *,
        row_number() over (
            partition by account, call_id
            order by {{ latest_row_order(source('optico', 'calls')) }}
        ) as copy_rank
    from {{ source('optico', 'calls') }}
)

select
    cast(account as {{ dbt.type_string() }}) as account,
    cast(call_id as {{ dbt.type_string() }}) as call_id,
    cast(start_date as {{ dbt.type_timestamp() }}) as started_at,
    cast(start_date_local as {{ dbt.type_timestamp() }}) as started_at_local,
    cast(caller as {{ dbt.type_string() }}) as caller,
    cast(tracking_number as {{ dbt.type_string() }}) as tracking_number,
    cast(phone as {{ dbt.type_string() }}) as destination_number,
    cast(trigger_type as {{ dbt.type_int() }}) as trigger_type,
    cast(source as {{ dbt.type_string() }}) as source,
    cast(url as {{ dbt.type_string() }}) as url,
    cast(referer as {{ dbt.type_string() }}) as referer,
    cast(keyword as {{ dbt.type_string() }}) as keyword,
    cast(status as {{ dbt.type_string() }}) as status,
    case
        when lower(trim(status)) in ('succès', 'succes', 'success') then 'answered'
        when lower(trim(status)) in ('occupé', 'occupe', 'busy') then 'busy'
        when lower(trim(status)) in ('aucune réponse', 'aucune reponse', 'no answer') then 'missed'
        when status is not null then 'unknown'
    end as outcome,
    cast(duration as {{ dbt.type_int() }}) as duration_seconds,
    cast(revenue as {{ dbt.type_numeric() }}) as revenue,
    cast(keypad as {{ dbt.type_string() }}) as keypad,
    cast(is_redirect as {{ dbt.type_boolean() }}) as is_redirect,
    cast(expired_redirect as {{ dbt.type_boolean() }}) as is_expired_redirect,
    cast(client_data as {{ dbt.type_string() }}) as client_data,
    cast(visit_id as {{ dbt.type_string() }}) as visit_id
from loaded
where copy_rank = 1
