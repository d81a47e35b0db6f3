"""carelake: a streaming healthcare data lake (Bronze raw bytes, Silver FHIR R4, Gold ClickHouse)."""

__version__ = "0.1.0"
