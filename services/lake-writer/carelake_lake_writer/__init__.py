"""The lake-writer: Silver, MPI links, raw arrivals and dead letters -> Gold tables (ClickHouse)."""
