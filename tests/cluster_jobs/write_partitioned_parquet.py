"""Cluster smoke job: proves the spark-submit packaging works on a real standalone cluster.

Run through ``scripts/submit tests/cluster_jobs/write_partitioned_parquet.py --env cluster``. It

* reads the config like every job does (``--env``, ``--conf``; the lakehouse root from ``LAKEML_LAKEHOUSE``),
* waits until ``--min-executors`` executors have registered, so the work is spread over them,
* runs a ``mapInPandas`` function on the executors that imports lakeml (from the packed environment)
  and records, per partition, ``lakeml.__version__``, a lakeml function's result, the Python
  process id, host name, interpreter, working directory and where lakeml was imported from,
* writes that as Parquet partitioned by ``bucket`` to ``<lakehouse root>/smoke/partitioned_parquet``
  and a JSON file with the driver's facts (pid, host, master, app id) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

OUTPUT = "smoke/partitioned_parquet"
RUN_INFO = "smoke/partitioned_parquet_run.json"
BUCKETS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="cluster")
    p.add_argument("--run-date", default=None)
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--min-executors", type=int, default=2)
    p.add_argument("--wait-seconds", type=float, default=90.0)
    return p.parse_args(argv)


def executor_facts(batches: Iterator) -> Iterator:
    """Runs in the executors' Python workers: every row gets the facts of the process that wrote it."""
    import lakeml
    from lakeml.config import join_location

    facts = {
        "lakeml_version": lakeml.__version__,
        "lakeml_file": lakeml.__file__,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "python": sys.executable,
        "cwd": os.getcwd(),
    }
    for pdf in batches:
        out = pdf.assign(**facts)
        out["location"] = [join_location("/lake", f"bucket={b}") for b in out["bucket"]]
        yield out


def wait_for_executors(spark, wanted: int, seconds: float) -> int:
    """Executors registered with the driver (the driver's own block manager is not counted)."""
    sc = spark.sparkContext
    deadline = time.monotonic() + seconds
    while True:
        count = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
        if count >= wanted or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pyspark.sql import functions as F

    from lakeml.config import join_location, load_config
    from lakeml.session import build_spark

    config = load_config(args.env, args.conf)
    spark = build_spark(config, app_name="lakeml-cluster-smoke")
    sc = spark.sparkContext
    executors = wait_for_executors(spark, args.min_executors, args.wait_seconds)
    print(f"smoke: master={sc.master} executors={executors}", flush=True)

    df = spark.range(0, args.rows, numPartitions=args.partitions).withColumn(
        "bucket", (F.col("id") % BUCKETS).cast("int")
    )
    schema = (
        "id long, bucket int, lakeml_version string, lakeml_file string, pid int, hostname string, "
        "python string, cwd string, location string"
    )
    out = df.mapInPandas(executor_facts, schema)
    target = join_location(config.lakehouse.root, OUTPUT)
    out.write.mode("overwrite").partitionBy("bucket").parquet(target)

    info = {
        "driver_pid": os.getpid(),
        "driver_hostname": socket.gethostname(),
        "driver_python": sys.executable,
        "master": sc.master,
        "app_id": sc.applicationId,
        "spark_version": spark.version,
        "executors": executors,
        "rows": args.rows,
        "output": target,
        "env": config.env,
        "lakehouse_root": config.lakehouse.root,
    }
    run_info = Path(join_location(config.lakehouse.root, RUN_INFO))
    run_info.parent.mkdir(parents=True, exist_ok=True)
    run_info.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print("smoke: " + json.dumps(info), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
