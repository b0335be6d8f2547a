"""Firehose's hard API limits and billing step (AWS's documented quotas); these cannot be raised."""

MAX_RECORD_BYTES = 1_024_000
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
# Dynamic partitioning's deaggregation silently fails past this many lines per record.
MAX_EVENTS_PER_RECORD = 500
BILLING_STEP_BYTES = 5_120
