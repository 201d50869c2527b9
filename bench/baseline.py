"""The script the tap replaces: ``requests`` in a loop, one line of JSON per result.

It reads the calls, then the daily totals, of one date range and prints each
result as the API sent it: no typing, no keys, no state, no retries. The
benchmark holds the tap's CPU per record against this.

Usage: baseline.py API_URL API_KEY START_DATE END_DATE
"""

from __future__ import annotations

import json
import sys

import requests

PAGE_SIZE = 5000


def main() -> None:
    api_url, api_key, start_date, end_date = sys.argv[1:5]
    session = requests.Session()
    extra_params: list[dict[str, str]] = [{}, {"group_by_day": "1"}]
    for extra in extra_params:
        page = 1
        while page:
            params: dict[str, str | int] = {
                "api_key": api_key,
                "type": "calls",
                "start_date": start_date,
                "end_date": end_date,
                "limit": PAGE_SIZE,
                "page": page,
                **extra,
            }
            answer = session.get(api_url, params=params, timeout=120)
            answer.raise_for_status()
            body = answer.json()
            for result in body["results"]:
                print(json.dumps(result))
            page = body.get("next_page")


if __name__ == "__main__":
    main()
