{#- The tap's own verdict: every account-day whose latest check found the delivered calls and
    Optico's daily totals apart. Each failing row names the account, the day and the measures; with
    store_failures they stay in <schema>_dbt_test__audit.reconciliation_days_differ. -#}
{{ config(tags=['reconciliation']) }}

select
    account,
    local_date,
    differs,
    calls_delivered,
    calls_optico,
    duration_seconds_delivered,
    duration_seconds_optico,
    revenue_delivered,
    revenue_optico
from {{ ref('stg_optico__reconciliation') }}
where status = 'differ'
