"""The MPI's PostgreSQL side: schema migrations, the candidate index and the MpiStore."""
