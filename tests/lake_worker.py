"""One table operation in its own OS process, for tests/test_lakehouse_processes.py.

Usage: ``python tests/lake_worker.py '<json spec>'``. The spec names the table and the operation::

    {
      "root": "/tmp/.../lake",              # lakehouse.root of this process's config
      "table": "/tmp/.../lake/events",      # table uri
      "engine": "delta-rs" | "delta-spark",
      "op": "append" | "overwrite_where" | "merge",
      "rows": [{"start": 0, "stop": 10, "step": 1, "tag": "w0", "day": null}, ...],
      "txn": ["app", 1] | null,
      "where": [["day", "=", "2026-11-02"]],  # overwrite_where
      "keys": ["id"],                         # merge
      "start_gate": "/path/go" | null,        # print READY, then wait for this file before the operation
      "commit_gate": "/path/go" | null,       # delta-rs: print AT_COMMIT at the first commit, wait for the
      file
      "crash_at_commit": false                # SIGKILL this process after data files are written, before
                                              # the commit (delta-rs: at the commit call; delta-spark,
                                              # which commits inside its JVM: in the write's last task)
    }

Protocol on stdout, one line each: ``READY``, ``AT_COMMIT``, and last ``RESULT {json}``.
Exit code 0 for a completed operation, 3 for a lakeml TableError (ConcurrentModificationError
included: the RESULT line names the type and message); anything else is a traceback and exit 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

BASE_DAY = dt.date(2026, 11, 1)
DAYS = 3
SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("day", T.DateType(), True),
        T.StructField("value", T.StringType(), True),
    ]
)
PARTITION_BY = ["day"]
GATE_TIMEOUT_S = 400.0  # longer than the test waits: the test, not the worker, gives up first


def day(offset: int) -> str:
    """ISO date of partition ``offset`` (rows without an explicit day land in ``id % DAYS``)."""
    return (BASE_DAY + dt.timedelta(days=offset)).isoformat()


def segment(start: int, stop: int, tag: str, step: int = 1, day: str | None = None) -> dict[str, Any]:
    return {"start": start, "stop": stop, "step": step, "tag": tag, "day": day}


def frame(spark: SparkSession, segments: list[dict[str, Any]]) -> DataFrame:
    """Rows ``id, day, value`` for each segment: ids from spark.range, value ``<tag>-<id>``.

    ``day`` is the segment's fixed date, or ``BASE_DAY + id % DAYS`` when it has none. The test
    process builds its expected rows with this same function.
    """
    parts = []
    for seg in segments:
        ids = spark.range(seg["start"], seg["stop"], seg.get("step") or 1)
        if seg.get("day"):
            day_col = F.lit(seg["day"]).cast(T.DateType())
        else:
            day_col = F.date_add(
                F.lit(BASE_DAY.isoformat()).cast(T.DateType()), (F.col("id") % DAYS).cast("int")
            )
        parts.append(
            ids.select(
                F.col("id"),
                day_col.alias("day"),
                F.concat(F.lit(f"{seg['tag']}-"), F.col("id").cast("string")).alias("value"),
            )
        )
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def _say(line: str) -> None:
    print(line, flush=True)


def _wait_for(gate: str) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise SystemExit(f"lake_worker: gate {gate} did not open within {GATE_TIMEOUT_S:.0f}s")
        time.sleep(0.02)


class CommitProbe:
    """Wraps deltalake's commit call: counts attempts and failures, and can pause or crash at it."""

    def __init__(self, commit_gate: str | None, crash: bool) -> None:
        self.commit_gate = commit_gate
        self.crash = crash
        self.attempts = 0
        self.failures = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        import deltalake

        original = deltalake.DeltaTable.create_write_transaction
        probe = self

        def create_write_transaction(table: Any, *args: Any, **kwargs: Any) -> Any:
            with probe._lock:
                probe.attempts += 1
                first = probe.attempts == 1
            if probe.crash:
                # The data files are written; die before the log entry that would reference them.
                _say("AT_COMMIT")
                os.kill(os.getpid(), signal.SIGKILL)
            if first and probe.commit_gate:
                _say("AT_COMMIT")
                _wait_for(probe.commit_gate)
            try:
                return original(table, *args, **kwargs)
            except Exception:
                with probe._lock:
                    probe.failures += 1
                raise

        deltalake.DeltaTable.create_write_transaction = create_write_transaction  # type: ignore[method-assign]


_DRIVER_PID = "LAKE_WORKER_DRIVER_PID"
_CRASH_TASKS = 2


def crash_in_last_task(df: DataFrame) -> DataFrame:
    """``df`` in two tasks; the second kills this worker (driver, JVM, Python workers) at its first batch.

    With ``local[1]`` the tasks run in order: the first one's data files are written and the
    commit, which needs every task, never comes. Prints AT_COMMIT on the driver's stdout first.
    """

    def kill(batches: Any) -> Any:
        from pyspark import TaskContext

        context = TaskContext.get()
        for batch in batches:
            if context is not None and context.partitionId() == _CRASH_TASKS - 1:
                pid = int(os.environ[_DRIVER_PID])
                with open(f"/proc/{pid}/fd/1", "a") as driver_stdout:  # append: keep its lines
                    driver_stdout.write("AT_COMMIT\n")
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            yield batch

    return df.repartition(_CRASH_TASKS).sortWithinPartitions("id").mapInArrow(kill, df.schema)


SOAK_ROWS = 5  # rows per operation
SOAK_RETRIES = 20  # a conflict that outlasts the table layer's own retries is retried here


def soak_segment(base: int, i: int, tag: str) -> dict[str, Any]:
    """The rows operation ``i`` of a soak inserts: ``base + 10 i`` and the next SOAK_ROWS - 1 ids."""
    return segment(base + 10 * i, base + 10 * i + SOAK_ROWS, tag)


def soak(spark: SparkSession, table: Any, name: str, count: int, base: int) -> dict[str, Any]:
    """``count`` operations on ``table``: even ones append new ids, odd ones merge (update the previous
    operation's ids, insert new ones), each with the txn ``(name, i)``. A ConcurrentModificationError
    (the table layer gave up retrying) is counted and the operation retried: nothing may fail otherwise.
    """
    from lakeml.errors import ConcurrentModificationError

    conflicts: list[str] = []
    noops = 0
    seconds: list[float] = []  # per operation, conflicts' retries included
    for i in range(count):
        began = time.monotonic()
        tag = f"{name}-{i}"
        rows = [soak_segment(base, i, tag)]
        for attempt in range(SOAK_RETRIES):
            try:
                if i % 2 == 0:
                    outcome = table.append(frame(spark, rows), txn=(name, i))
                else:
                    updates = [soak_segment(base, i - 1, tag), *rows]
                    outcome = table.merge(frame(spark, updates), ["id"], txn=(name, i))
                noops += outcome.noop
                break
            except ConcurrentModificationError as exc:
                conflicts.append(str(exc)[:300])
                if attempt == SOAK_RETRIES - 1:
                    raise
        seconds.append(time.monotonic() - began)
    seconds.sort()
    return {
        "operations": count,
        "conflicts_retried": len(conflicts),
        "conflict_samples": conflicts[:3],
        "noops": noops,
        "op_seconds": {
            "total": round(sum(seconds), 1),
            "median": round(seconds[len(seconds) // 2], 2) if seconds else 0.0,
            "max": round(seconds[-1], 2) if seconds else 0.0,
        },
    }


def run(spec: dict[str, Any]) -> int:
    began = time.monotonic()
    from lakeml.config import load_config
    from lakeml.errors import TableError
    from lakeml.lakehouse import DeltaTableRef
    from lakeml.session import build_spark

    engine = spec.get("engine", "delta-rs")
    config = load_config(
        "test",
        [
            f"lakehouse.root={spec['root']}",
            f"lakehouse.engine={engine}",
            "spark.master=local[1]",
            "spark.conf.spark.sql.shuffle.partitions=1",
            "spark.conf.spark.default.parallelism=1",
            "spark.conf.spark.driver.memory=1g",
            # One task per snapshot rebuild (the suite's 2 are for local[2]): a soak rebuilds one per commit.
            "spark.conf.spark.databricks.delta.snapshotPartitions=1",
            # A short-lived JVM: the C1 compiler alone starts it noticeably faster on 2 cores.
            "spark.conf.spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        ],
    )
    probe = CommitProbe(spec.get("commit_gate"), bool(spec.get("crash_at_commit")))
    if engine == "delta-rs":
        probe.install()
    elif probe.commit_gate:
        raise SystemExit("lake_worker: commit_gate needs the delta-rs engine")
    # The JVM and its Python workers inherit this: a task can kill the whole worker.
    os.environ[_DRIVER_PID] = str(os.getpid())

    spark = build_spark(config, app_name=f"lake-worker-{os.getpid()}")
    try:
        table = DeltaTableRef(spark, spec["table"], config.lakehouse, engine)
        df = frame(spark, spec["rows"]) if spec["rows"] else spark.createDataFrame([], SCHEMA)  # soak: none
        if probe.crash and engine == "delta-spark":
            df = crash_in_last_task(df)
        txn = tuple(spec["txn"]) if spec.get("txn") else None
        ready = time.monotonic()
        if spec.get("start_gate"):
            _say("READY")
            _wait_for(spec["start_gate"])
        released = time.monotonic()
        result: dict[str, Any] = {"pid": os.getpid()}
        try:
            op = spec["op"]
            if op == "append":
                outcome = table.append(df, txn=txn)
            elif op == "overwrite_where":
                outcome = table.overwrite_where(df, [tuple(f) for f in spec["where"]], txn=txn)
            elif op == "merge":
                outcome = table.merge(df, spec["keys"], txn=txn)
            elif op == "soak":
                result |= soak(spark, table, spec["name"], int(spec["count"]), int(spec["base"]))
                outcome = None
            else:
                raise SystemExit(f"lake_worker: unknown op {op!r}")
            result |= {"status": "ok"}
            if outcome is not None:
                result |= {
                    "version": outcome.version,
                    "files_added": outcome.files_added,
                    "files_removed": outcome.files_removed,
                    "rows_added": outcome.rows_added,
                }
            code = 0
        except TableError as exc:
            result |= {"status": "error", "error": type(exc).__name__, "message": str(exc)}
            code = 3
        result |= {
            "commit_attempts": probe.attempts,
            "commit_failures": probe.failures,
            "seconds": {
                "startup": round(ready - began, 1),
                "operation": round(time.monotonic() - released, 1),
            },
        }
        _say("RESULT " + json.dumps(result))
        return code
    finally:
        spark.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {Path(sys.argv[0]).name} '<json spec>'")
    sys.exit(run(json.loads(sys.argv[1])))
