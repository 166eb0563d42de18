"""The delta-rs engine: lakeml's own committer over the ``deltalake`` package.

Why it exists: with it a job needs no Delta jars in the JVM (plain PySpark, any cluster), and lakeml
decides what a concurrent commit means for each operation (``max_commit_retries=0``: rebase onto
commits that do not conflict, refuse the ones that do, never commit a data file twice). Spark tasks
write the Parquet files and their Delta statistics (``writer``), the driver commits only their
metadata (``engine``); reads list and prune files from the log (``lakehouse.files``). The
delta-spark engine is the native connector, for platforms that ship it.
"""

from lakeml.lakehouse.engines.delta_rs.engine import DeltaRsEngine

__all__ = ["DeltaRsEngine"]
