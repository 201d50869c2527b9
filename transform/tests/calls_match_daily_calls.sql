{#- Calls loaded per account and local day against Optico's daily totals: count, duration and
    revenue. Each failing row names an account and a day; with store_failures they stay in
    <schema>_dbt_test__audit.calls_match_daily_calls. Each account's latest day is left out
    unless var('reconcile_latest_day') (see dbt_project.yml). -#}
{{ config(tags=['reconciliation']) }}

select
    account,
    local_date,
    calls_loaded,
    calls_reported,
    duration_seconds_loaded,
    duration_seconds_reported,
    revenue_loaded,
    revenue_reported
from {{ ref('optico_daily_reconciliation') }}
where
    {% if not var('reconcile_latest_day') %}not is_latest_day and {% endif %}(
        calls_loaded != calls_reported
        or duration_seconds_loaded != duration_seconds_reported
        or abs(revenue_loaded - revenue_reported) > {{ var('reconcile_revenue_tolerance') }}
    )
