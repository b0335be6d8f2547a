"""Where events live between put() and an outcome: segments of reused memory, and the spool
on disk for what could not be delivered."""
