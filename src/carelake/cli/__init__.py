"""The `carelake` command line."""
