{#- One row per account and local day with calls. -#}
with per_day as (
    select
        account,
        local_date,
        {{ call_measures() }}
    from {{ ref('optico_calls') }}
    group by account, local_date
)

select
    per_day.*,
    {{ ratio('answered_calls', 'calls') }} as answer_rate,
    {{ ratio('duration_seconds', 'answered_calls') }} as average_answered_duration_seconds
from per_day
