"""Storage faults on both engines: a clear error naming the table, and nothing committed half.

A read-only lakehouse and a full disk are real mounts (a tmpfs, remounted read-only or filled
up): the tests need root and skip with their reason without it. A corrupted log entry and a data
file the log still references are made by hand in a table under ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakeml.lakehouse import DeltaTableRef
from tests.lake_worker import PARTITION_BY, SCHEMA, frame, segment
from tests.reliability_report import record

SEED = [segment(0, 30, "seed")]


def make_table(spark: SparkSession, config, root: Path, engine: str) -> DeltaTableRef:
    ref = DeltaTableRef(spark, str(root / "events"), config.lakehouse, engine)
    ref.create(SCHEMA, PARTITION_BY)
    ref.append(frame(spark, SEED))
    return ref


def log_files(ref: DeltaTableRef) -> list[str]:
    return sorted(p.name for p in Path(ref.uri, "_delta_log").iterdir())


def fails_naming_the_table(ref: DeltaTableRef, action) -> str:
    """Run ``action``; it must raise an error whose message names the table's folder."""
    with pytest.raises(Exception) as caught:
        action()
    message = str(caught.value)
    assert ref.uri in message or Path(ref.uri).name in message.split("/"), message[:2000]
    return message


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs at ``tmp_path/mnt`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the read-only and full-disk faults are real mounts)")
    target = tmp_path / "mnt"
    target.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(target)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_corrupted_log_entry_is_a_clear_error_naming_the_table(spark, config, tmp_path, engine):
    ref = make_table(spark, config, tmp_path, engine)
    ref.append(frame(spark, [segment(100, 110, "second")]))
    last = Path(ref.uri, "_delta_log", f"{1 + 1:020d}.json")
    last.write_text(last.read_text()[:40])  # a torn write: half a JSON line
    before = log_files(ref)
    fresh = DeltaTableRef(spark, ref.uri, config.lakehouse, engine)
    fails_naming_the_table(fresh, lambda: fresh.read().count())
    fails_naming_the_table(fresh, lambda: fresh.append(frame(spark, [segment(200, 205, "third")])))
    assert log_files(fresh) == before, "nothing may be committed on top of a corrupted log"
    record(f"corrupted _delta_log JSON ({engine})", 2, 0, 0, "clear error naming the table; no commit")


def test_missing_data_file_is_a_clear_error_naming_the_table(spark, config, tmp_path, engine):
    ref = make_table(spark, config, tmp_path, engine)
    victim = next(Path(ref.uri).rglob("*.parquet"))
    victim.unlink()
    before = log_files(ref)
    # A read of the rows (a count may come from the log's statistics alone, on delta-spark).
    fails_naming_the_table(ref, lambda: ref.read().collect())
    # A merge must read the files its keys may be in: it fails too, and commits nothing.
    source = frame(spark, [segment(0, 30, "updated")])
    fails_naming_the_table(ref, lambda: ref.merge(source, ["id", "day"]))
    assert log_files(ref) == before
    record(f"data file missing under the log ({engine})", 2, 0, 0, "clear error naming the table; no commit")


def test_read_only_lakehouse_is_a_clear_error_and_commits_nothing(spark, config, mount, engine):
    ref = make_table(spark, config, mount, engine)
    version = ref.version()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    before = log_files(ref)
    message = fails_naming_the_table(ref, lambda: ref.append(frame(spark, [segment(100, 110, "ro")])))
    assert "read-only" in message.lower(), message[:2000]
    assert log_files(ref) == before and ref.version() == version
    assert ref.read().count() == 30  # still readable
    record(f"read-only lakehouse mount ({engine})", 1, 0, 0, "clear error naming the table; no commit")


def test_full_disk_is_a_clear_error_and_commits_nothing(spark, config, mount, engine):
    ref = make_table(spark, config, mount, engine)
    version = ref.version()
    filler = mount / "filler"
    # Fill the mount but for a few KiB: the log entry of a small commit might still fit, data does not.
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    big = frame(spark, [segment(1000, 201000, "x" * 40)]).withColumn("value", F.sha2(F.col("value"), 512))
    message = fails_naming_the_table(ref, lambda: ref.append(big))
    assert "no space" in message.lower() or "disk" in message.lower() or "quota" in message.lower(), message[
        :2000
    ]
    assert ref.version() == version
    filler.unlink()
    assert ref.read().count() == 30
    # With space again, the table takes writes: nothing half-written stands in the way.
    assert ref.append(frame(spark, [segment(500, 510, "after")])).version == version + 1
    assert ref.read().count() == 40
    record(f"full disk: 16 MiB tmpfs filled ({engine})", 2, 0, 0, "clear error naming the table; no commit")
