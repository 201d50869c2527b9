{#- One row per account and local day with calls. -#}
select
    account,
    local_date,
    {{ call_measures(with_rates=true) }}
from {{ ref('optico_calls') }}
group by account, local_date
