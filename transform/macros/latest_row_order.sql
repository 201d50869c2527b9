{#- The order that puts a key's most recent copy first, for tables loaded append-only.

    Targets add a load time when asked (`add_record_metadata`, `add_metadata_columns`):
    `_sdc_batched_at`, else `_sdc_extracted_at`. Without either, copies of a key cannot be told
    apart by age and one of them is kept. -#}
{%- macro latest_row_order(relation) -%}
  {%- set found = [] -%}
  {%- if execute -%}
    {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
    {%- for candidate in ['_sdc_batched_at', '_sdc_extracted_at'] if candidate in names -%}
      {%- do found.append(candidate) -%}
    {%- endfor -%}
  {%- endif -%}
  {%- if found -%}{{ adapter.quote(found[0]) }} desc nulls last{%- else -%}1{%- endif -%}
{%- endmacro -%}
