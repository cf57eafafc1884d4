"""weather-api: weather reports in, exact live aggregates in Valkey out."""

__version__ = "0.1.0"
