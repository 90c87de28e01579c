"""The HTTP API: submit, poll, fetch results. Reads state from the database only."""

# Seconds a client should wait before retrying after a 503: outages are short or long,
# never instant, and a second-by-second retry storm helps no one.
RETRY_AFTER_SECONDS = 10
