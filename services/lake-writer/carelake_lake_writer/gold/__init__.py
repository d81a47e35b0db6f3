"""Gold (ClickHouse) I/O of the lake-writer: migrations, the start-up schema check, the sink."""
