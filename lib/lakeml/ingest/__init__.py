"""Landing → bronze: raw files loaded as-is into append-only Delta tables, exactly once."""
