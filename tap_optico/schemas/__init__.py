"""The stream schemas, one JSON file per stream: the source of every stream's fields."""
