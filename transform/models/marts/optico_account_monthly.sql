{#- One row per account and local month with calls. -#}
select
    account,
    local_month,
    count(distinct local_date) as days_with_calls,
    {{ call_measures(with_rates=true) }}
from {{ ref('optico_calls') }}
group by account, local_month
