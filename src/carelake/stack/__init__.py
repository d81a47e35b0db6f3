"""The local stack: real Kafka, PostgreSQL, Redis and the Gold front, run as the project's own processes."""
