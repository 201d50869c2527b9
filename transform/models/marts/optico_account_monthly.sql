{#- One row per account and local month with calls. -#}
with per_month as (
    select
        account,
        local_month,
        count(distinct local_date) as days_with_calls,
        {{ call_measures() }}
    from {{ ref('optico_calls') }}
    group by account, local_month
)

select
    per_month.*,
    {{ ratio('answered_calls', 'calls') }} as answer_rate,
    {{ ratio('duration_seconds', 'answered_calls') }} as average_answered_duration_seconds
from per_month
