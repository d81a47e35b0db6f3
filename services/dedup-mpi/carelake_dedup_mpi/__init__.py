"""dedup-mpi: a streaming master patient index (issue 6). See the service README."""
