"""Shared pure transforms: column builders and ``DataFrame -> DataFrame`` functions, no I/O."""
