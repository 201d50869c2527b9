"""Singer tap for the Optico call-tracking Data API."""
