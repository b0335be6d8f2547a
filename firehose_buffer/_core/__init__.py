"""The pure core: bytes and numbers in, bytes and numbers out. No threads, no clock reads, no
I/O: encoding, routing, packing, rate limiting, the records and the ledger, and the
scheduler's one entry point, ``tick``. The runtime passes in the time and the outcomes."""
