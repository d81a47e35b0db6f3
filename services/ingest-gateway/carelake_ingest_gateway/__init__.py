"""ingest-gateway: every source in, raw bytes kept in Bronze, a raw envelope per message on bronze.raw.v1."""
