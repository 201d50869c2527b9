{#- Every account and local day with a call has Optico's daily total in daily_calls (a stream
    that was not selected, or a load that stopped between the two streams, leaves none). -#}
{{ config(tags=['reconciliation']) }}

select account, local_date, calls_loaded
from {{ ref('optico_daily_reconciliation') }}
where calls_loaded > 0 and not has_daily_total
