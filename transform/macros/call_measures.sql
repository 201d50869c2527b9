{#- The measures every summary of optico_calls gives, so they are defined once. -#}
{%- macro call_measures(with_rates=false) -%}
    count(*) as calls,
    {{ count_if('is_answered') }} as answered_calls,
    {{ count_if('is_missed') }} as missed_calls,
    {{ count_if('is_busy') }} as busy_calls,
    {{ count_if('is_first_call_of_caller') }} as first_calls_of_callers,
    count(distinct caller) as callers,
    coalesce(sum(duration_seconds), 0) as duration_seconds,
    coalesce(sum(revenue), 0) as revenue
    {%- if with_rates %},
    {{ ratio(count_if('is_answered'), 'count(*)') }} as answer_rate,
    {{ ratio('sum(case when is_answered then duration_seconds end)', count_if('is_answered')) }}
        as average_answered_duration_seconds
    {%- endif -%}
{%- endmacro -%}

{%- macro count_if(condition) -%}
    sum(case when {{ condition }} then 1 else 0 end)
{%- endmacro -%}

{#- A share as a fraction, NULL when there is nothing to divide. -#}
{%- macro ratio(part, whole) -%}
    cast({{ part }} as {{ dbt.type_numeric() }}) / nullif({{ whole }}, 0)
{%- endmacro -%}
