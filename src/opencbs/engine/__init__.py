"""The backup engine: scan, classify, chunk, compress, encrypt, the repository format, restore
and verify (architecture.md)."""
