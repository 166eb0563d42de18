"""Shared pure transforms: column builders and ``DataFrame -> DataFrame`` functions, no I/O."""

from collections.abc import Callable

from pyspark.sql import DataFrame

# What a parametrized transform returns: a function usable with ``df.transform``.
Transform = Callable[[DataFrame], DataFrame]
