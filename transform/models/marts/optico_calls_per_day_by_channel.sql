{#- Calls per account and local day, by where they came from. -#}
select
    account,
    local_date,
    source,
    keyword,
    tracking_number,
    referer,
    {{ call_measures() }}
from {{ ref('optico_calls') }}
group by account, local_date, source, keyword, tracking_number, referer
