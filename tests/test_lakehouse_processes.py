"""The table layer under real concurrency: several OS processes, each with its own SparkSession.

Every writer is ``tests/lake_worker.py`` in a child process (``local[1]``). Two file gates make the
races deterministic: ``go-start`` releases the workers at once after each printed READY, and for
the delta-rs engine ``go-commit`` holds each worker at its first commit (after its data files are
written) until all of them are there, so they all commit against the same table version and all
but one must go through the engine's conflict handling.

delta-spark commits inside its JVM, where no gate can hold it; on a local path its log store is not
safe across processes, so the engine serializes each table's writes with a lock file. The races
below hold that lock in the test process while the workers start their operations, then release it:
they must wait, and then commit one after the other, each against the version the previous made.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import Config
from lakeml.lakehouse import DeltaTableRef
from lakeml.lakehouse.engines.delta_spark import local_write_lock
from lakeml.lakehouse.log import read_commits
from tests.lake_worker import PARTITION_BY, SCHEMA, day, frame, segment

pytestmark = pytest.mark.slow

WORKER_SCRIPT = Path(__file__).with_name("lake_worker.py")
# A worker JVM takes 5-15 s to start on a busy 2-core machine; these bound a hung child, not a slow one.
STARTUP_TIMEOUT_S = 180.0
FINISH_TIMEOUT_S = 180.0
SEED = [segment(0, 60, "seed")]
# delta-spark races: the write lock is held this long after the workers are released  # 20 rows in each of the
# three day partitions
LOCK_HOLD_S = 4.0


# ---------------------------------------------------------------------------------------------- workers
class Worker:
    """One ``lake_worker.py`` child; stdout and stderr go to files the test polls."""

    def __init__(self, name: str, spec: dict[str, Any], folder: Path) -> None:
        self.name = name
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        env = dict(os.environ)
        # Never let a child attach to this process's JVM; its Python workers must run this venv.
        for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_SUBMIT_ARGS"):
            env.pop(key, None)
        env |= {
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
        }
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT), json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=folder,
                start_new_session=True,  # its own process group: the JVM and Python workers go with it
            )

    def lines(self) -> list[str]:
        return self.out.read_text(encoding="utf-8", errors="replace").splitlines()

    def describe(self) -> str:
        tail = "\n".join(self.err.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        return f"worker {self.name} (rc={self.proc.poll()}) stdout={self.lines()} stderr tail:\n{tail}"

    def wait_for(self, marker: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.lines():
            if self.proc.poll() is not None and marker not in self.lines():
                pytest.fail(f"{marker} never came: {self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{marker} did not come within {timeout:.0f}s: {self.describe()}")
            time.sleep(0.05)

    def join(self, timeout: float = FINISH_TIMEOUT_S) -> int:
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout:.0f}s: {self.describe()}")
        return self.proc.returncode

    def result(self) -> dict[str, Any]:
        """Wait for the child; its RESULT line (exit 0 = done, 3 = lakeml TableError)."""
        code = self.join()
        found = [line[len("RESULT ") :] for line in self.lines() if line.startswith("RESULT ")]
        assert code in (0, 3) and len(found) == 1, f"no clean result: {self.describe()}"
        result = json.loads(found[0])
        assert (code == 0) == (result["status"] == "ok"), self.describe()
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


class Workers:
    """Starts workers, opens gates, and kills whatever is still running at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.started: list[Worker] = []

    def start(self, name: str, spec: dict[str, Any]) -> Worker:
        worker = Worker(name, spec, self.folder)
        self.started.append(worker)
        return worker

    def race(self, specs: dict[str, dict[str, Any]], hold_at_commit: bool) -> dict[str, dict[str, Any]]:
        """Start all at once; release them together; with ``hold_at_commit`` also commit together.

        delta-spark workers cannot be held at their commit: the table's write lock is held instead
        for a while after the release, and nothing may commit meanwhile.
        """
        engines = {spec["engine"] for spec in specs.values()}
        if engines == {"delta-spark"}:
            return self._race_on_lock(specs)
        start_gate, commit_gate = self.folder / "go-start", self.folder / "go-commit"
        start_gate.unlink(missing_ok=True)
        commit_gate.unlink(missing_ok=True)
        workers = [
            self.start(
                name,
                spec
                | {
                    "start_gate": str(start_gate),
                    "commit_gate": str(commit_gate) if hold_at_commit else None,
                },
            )
            for name, spec in specs.items()
        ]
        for worker in workers:
            worker.wait_for("READY")
        start_gate.touch()
        if hold_at_commit:
            for worker in workers:
                worker.wait_for("AT_COMMIT")
            commit_gate.touch()
        results = {worker.name: worker.result() for worker in workers}
        print("race:", json.dumps(results, indent=1))  # shown when a test fails
        return results

    def _race_on_lock(self, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        start_gate = self.folder / "go-start"
        start_gate.unlink(missing_ok=True)
        workers = [self.start(name, spec | {"start_gate": str(start_gate)}) for name, spec in specs.items()]
        for worker in workers:
            worker.wait_for("READY")
        table = next(iter(specs.values()))["table"]
        with local_write_lock(table):
            before = DeltaTable(table).version()
            start_gate.touch()
            time.sleep(LOCK_HOLD_S)
            assert DeltaTable(table).version() == before, "a worker committed while the lock was held"
            assert all(w.proc.poll() is None for w in workers), [w.describe() for w in workers]
        results = {worker.name: worker.result() for worker in workers}
        print("race:", json.dumps(results, indent=1))  # shown when a test fails
        return results

    def kill_all(self) -> None:
        for worker in self.started:
            worker.kill()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path / "workers")
    try:
        yield pool
    finally:
        pool.kill_all()


# ---------------------------------------------------------------------------------------------- tables
def lake_root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


def make_table(spark: SparkSession, config: Config, tmp_path: Path, engine: str) -> DeltaTableRef:
    """A date-partitioned table holding SEED: version 0 is the create, version 1 the seed append."""
    ref = DeltaTableRef(spark, str(lake_root(tmp_path) / "events"), config.lakehouse, engine)
    ref.create(SCHEMA, PARTITION_BY)
    assert ref.append(frame(spark, SEED)).version == 1
    return ref


def spec(
    tmp_path: Path, ref: DeltaTableRef, op: str, rows: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "root": str(lake_root(tmp_path)),
        "table": ref.uri,
        "engine": ref.engine_name,
        "op": op,
        "rows": rows,
    } | extra


def read_all(ref: DeltaTableRef) -> DataFrame:
    return ref.read().select(*SCHEMA.fieldNames())


def assert_rows(actual: DataFrame, expected: DataFrame) -> None:
    """Same rows, each exactly as often (duplicates included), in any order."""
    actual = actual.select(*SCHEMA.fieldNames())
    expected = expected.select(*SCHEMA.fieldNames())
    assertDataFrameEqual(actual, expected, checkRowOrder=False)
    assert actual.count() == actual.select("id").distinct().count(), "an id appears more than once"


def data_files(uri: str) -> set[str]:
    """Parquet data files on disk, relative to the table root (the log and hidden files excluded)."""
    root = Path(uri)
    out = set()
    for path in root.rglob("*.parquet"):
        rel = path.relative_to(root)
        if rel.parts[0] == "_delta_log" or any(part.startswith((".", "_")) for part in rel.parts):
            continue
        out.add(rel.as_posix())
    return out


def live_files(uri: str) -> set[str]:
    """Files of the current snapshot."""
    actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True))
    return {unquote(p) for p in actions.column("path").to_pylist()}


def ever_committed(uri: str) -> set[str]:
    """Every file some version of the log ever added."""
    return {add["path"] for commit in read_commits(uri, 0, DeltaTable(uri).version()) for add in commit.adds}


def orphans(uri: str) -> set[str]:
    """Data files no commit references: written by a writer that never committed them."""
    return data_files(uri) - ever_committed(uri)


def ok(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in results.items() if r["status"] == "ok"}


# ---------------------------------------------------------------------------------------------- tests
def test_concurrent_appends_from_processes_each_land_exactly_once(spark, config, tmp_path, engine, workers):
    n = 3
    ref = make_table(spark, config, tmp_path, engine)
    rows = {i: [segment(1000 * (i + 1), 1000 * (i + 1) + 45, f"w{i}")] for i in range(n)}
    specs = {f"writer-{i}": spec(tmp_path, ref, "append", rows[i], txn=[f"writer-{i}", 1]) for i in range(n)}

    # delta-rs: all held at their commit; delta-spark: all held at the table's write lock (its local
    # log store could otherwise let two processes overwrite each other's version file).
    results = workers.race(specs, hold_at_commit=engine == "delta-rs")

    for name, r in results.items():
        assert r["status"] == "ok" and r["version"] is not None, (name, r)
    # Every writer committed once, each on the version the one before it made.
    assert sorted(r["version"] for r in results.values()) == [2, 3, 4], results
    assert all(r["rows_added"] == 45 for r in results.values()), results
    if engine == "delta-rs":  # all three committed against version 1: two lost the first attempt and rebased
        assert sum(r["commit_failures"] for r in results.values()) >= n - 1, results
    table = DeltaTable(ref.uri)
    assert table.version() == 1 + n
    for i in range(n):
        assert table.transaction_version(f"writer-{i}") == 1
    expected = frame(spark, SEED + [seg for i in range(n) for seg in rows[i]])
    assert_rows(read_all(ref), expected)
    assert orphans(ref.uri) == set(), "a writer left data files behind that no commit references"

    # Rerunning a writer (here in this process: the txn check reads only the log) is a no-op.
    again = ref.append(frame(spark, rows[0]), txn=("writer-0", 1))
    assert again.noop and again.rows_added == 0, again
    assert DeltaTable(ref.uri).version() == 1 + n
    assert_rows(read_all(ref), expected)


def test_same_txn_from_two_processes_commits_once(spark, config, tmp_path, engine, workers):
    ref = make_table(spark, config, tmp_path, engine)
    rows = [segment(5000, 5050, "same")]
    specs = {name: spec(tmp_path, ref, "append", rows, txn=["same", 7]) for name in ("same-a", "same-b")}

    results = workers.race(specs, hold_at_commit=True)

    assert all(r["status"] == "ok" for r in results.values()), results
    versions = sorted((r["version"] for r in results.values()), key=lambda v: -1 if v is None else v)
    assert versions == [None, 2], f"one commit must win, the other become a no-op: {results}"
    if engine == "delta-rs":  # the loser's single commit attempt failed, then it found its txn committed
        assert sum(r["commit_attempts"] for r in results.values()) == 2, results
        assert sum(r["commit_failures"] for r in results.values()) == 1, results
    table = DeltaTable(ref.uri)
    assert table.version() == 2
    assert table.transaction_version("same") == 7
    assert_rows(read_all(ref), frame(spark, SEED + rows))
    assert orphans(ref.uri) == set(), "the no-op writer must delete the files it wrote"


def test_killed_writer_leaves_table_intact_and_vacuum_removes_its_files(
    spark, config, tmp_path, engine, workers
):
    ref = make_table(spark, config, tmp_path, engine)
    rows = [segment(7000, 7060, "crash")]
    before = frame(spark, SEED)

    crasher = workers.start(
        "crasher", spec(tmp_path, ref, "append", rows, txn=["crasher", 1], crash_at_commit=True)
    )
    assert crasher.join() == -signal.SIGKILL, crasher.describe()
    assert "AT_COMMIT" in crasher.lines(), crasher.describe()  # it died at the commit, not earlier
    assert not any(line.startswith("RESULT") for line in crasher.lines())

    # The table is untouched ...
    table = DeltaTable(ref.uri)
    assert table.version() == 1
    assert table.transaction_version("crasher") is None
    assert_rows(read_all(ref), before)
    # ... and the files the child wrote are on disk, unreferenced, holding exactly its rows.
    left = orphans(ref.uri)
    assert all(path.startswith("day=") for path in left), left
    if engine == "delta-rs":  # killed at the commit call: every row was written
        assert left, "the child wrote no data files before its commit"
        ids = pa.concat_tables([pq.read_table(Path(ref.uri) / p) for p in sorted(left)]).column("id")
        assert sorted(ids.to_pylist()) == list(range(7000, 7060))
    # delta-spark commits inside its JVM: the kill comes from a task of the crash helper, which runs
    # before the write's own shuffle by partition, so the child may die before any data file exists
    # (a weaker check than on delta-rs: what matters is that nothing was committed).

    # A normal rerun of the same append (same txn; in this process) commits exactly once.
    rerun = ref.append(frame(spark, rows), txn=("crasher", 1))
    assert rerun.version == 2 and rerun.rows_added == 60, rerun
    assert ref.append(frame(spark, rows), txn=("crasher", 1)).noop
    table = DeltaTable(ref.uri)
    assert table.version() == 2
    assert table.transaction_version("crasher") == 1
    expected = frame(spark, SEED + rows)
    assert_rows(read_all(ref), expected)
    assert orphans(ref.uri) == left, "the rerun writes new files; the crashed ones stay unreferenced"

    # Vacuum removes the orphans and nothing the table references.
    live = live_files(ref.uri)
    assert live.isdisjoint(left)
    listed = ref.vacuum(retention_hours=0, dry_run=True, enforce_retention=False)
    assert vacuumed_data(ref.uri, listed) == left
    assert data_files(ref.uri) >= left  # a dry run deletes nothing
    deleted = ref.vacuum(retention_hours=0, enforce_retention=False)
    assert vacuumed_data(ref.uri, deleted) == left
    assert data_files(ref.uri) == live
    assert live_files(ref.uri) == live
    assert_rows(read_all(ref), expected)


def test_racing_overwrites_of_one_partition_serialize_or_one_fails(spark, config, tmp_path, engine, workers):
    ref = make_table(spark, config, tmp_path, engine)
    target = day(1)
    inputs = {
        "overwrite-a": [segment(1000, 1040, "A", day=target)],
        "overwrite-b": [segment(2000, 2070, "B", day=target)],
    }
    specs = {
        name: spec(tmp_path, ref, "overwrite_where", rows, where=[["day", "=", target]])
        for name, rows in inputs.items()
    }

    results = workers.race(specs, hold_at_commit=True)

    done = ok(results)
    assert done, f"at least one overwrite must succeed: {results}"
    for name, r in results.items():
        if r["status"] != "ok":
            assert r["error"] == "ConcurrentModificationError", (name, r)
            message = r["message"].lower()  # names the operation, the table and the conflict
            assert "overwrite_where" in message and ref.uri.lower() in message, (name, r)
            assert "conflict" in message or "concurrent" in message, (name, r)
    if engine == "delta-rs":  # both read version 1 and committed at once: someone's first attempt lost
        assert sum(r["commit_failures"] for r in results.values()) >= 1, results
    else:  # serialized by the write lock: both replace the partition, one after the other
        assert len(done) == 2, results
    assert sorted(r["version"] for r in done.values()) == list(range(2, 2 + len(done))), results
    assert DeltaTable(ref.uri).version() == 1 + len(done)

    # The partition holds exactly the input of the last successful commit: no mix, no duplicate.
    last = max(done, key=lambda name: done[name]["version"])
    untouched = frame(spark, SEED).where(F.col("day") != F.to_date(F.lit(target)))
    assert_rows(ref.read(where=[("day", "=", target)]), frame(spark, inputs[last]))
    assert_rows(ref.read(where=[("day", "!=", target)]), untouched)
    assert_rows(read_all(ref), untouched.unionByName(frame(spark, inputs[last])))
    assert orphans(ref.uri) == set(), "a conflicted attempt must delete the files it wrote"


def test_append_racing_a_merge_on_another_partition_both_land(spark, config, tmp_path, engine, workers):
    ref = make_table(spark, config, tmp_path, engine)
    # The merge updates every seed row of day(2) with id < 30 and inserts ten new ids there.
    merge_rows = [segment(2, 30, "M", step=3, day=day(2)), segment(3000, 3010, "M", day=day(2))]
    append_rows = [segment(4000, 4020, "P", day=day(0))]
    specs = {
        "merge": spec(tmp_path, ref, "merge", merge_rows, keys=["id"]),
        "append": spec(tmp_path, ref, "append", append_rows),
    }

    results = workers.race(specs, hold_at_commit=True)

    assert all(r["status"] == "ok" for r in results.values()), results
    assert sorted(r["version"] for r in results.values()) == [2, 3], results
    if engine == "delta-rs":
        assert sum(r["commit_failures"] for r in results.values()) >= 1, results  # the loser rebased
    assert results["merge"]["files_removed"] >= 1, results  # it really rewrote the day(2) files
    assert DeltaTable(ref.uri).version() == 3
    kept = frame(spark, SEED).where(~((F.col("id") < 30) & (F.col("id") % 3 == 2)))
    expected = kept.unionByName(frame(spark, merge_rows)).unionByName(frame(spark, append_rows))
    assert_rows(read_all(ref), expected)
    assert orphans(ref.uri) == set()


def vacuumed_data(uri: str, paths: list[str]) -> set[str]:
    """The data files among what vacuum listed: delta-spark's local writes leave hidden Hadoop
    ``.<file>.crc`` checksums beside their files, which vacuum lists (and removes) too."""
    relative = {_relative(uri, p) for p in paths}
    return {p for p in relative if not Path(p).name.startswith(".")}


def _relative(uri: str, path: str) -> str:
    """A path vacuum reports (relative, absolute or file:// URI) relative to the table root."""
    text = unquote(path.removeprefix("file://"))
    root = uri.removeprefix("file://").rstrip("/") + "/"
    return text[len(root) :] if text.startswith(root) else text
