"""Pure cores: bytes and numbers in, bytes and numbers out; no threads, clock reads or I/O."""
