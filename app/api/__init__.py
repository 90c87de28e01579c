"""The HTTP API: submit, poll, fetch results. Reads state from the database only."""
