"""What the Optico Data API reference says, written once for the tap and the sandbox."""

from __future__ import annotations

from types import MappingProxyType

DEFAULT_URL = "https://www.optico.fr/data-api"
#: The only kind of data the API serves ("Uniquement Appel pour le moment").
DATA_TYPE = "calls"
FIRST_PAGE = 1
MIN_PAGE_SIZE = 10
MAX_PAGE_SIZE = 5_000
#: The optional filters, each a query parameter of the same name.
FILTERS = MappingProxyType(
    {
        "phone": "Only calls to this destination number.",
        "tracking_phone": "Only calls on this tracking number.",
        "caller_phone": "Only calls from this caller number.",
        "offline_phone_description": "Only calls on static (offline) numbers whose description matches.",
    }
)
#: ``next_page`` values that mark the last page (besides an absent key).
LAST_PAGE_MARKERS: tuple[object, ...] = (None, 0, "", "0", False)
