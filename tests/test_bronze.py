"""Landing → bronze: every line once, incremental, and safe to replay after a crash."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lakeml.config import load_config
from lakeml.errors import JobFailed
from lakeml.ingest.bronze import load_feed_to_bronze
from lakeml.lakehouse import Lakehouse
from lakeml.pipeline import registry, run_job
from lakeml.runstate import INPUTS_UNCHANGED
from lakeml.steps import DateRange


@pytest.fixture
def lake_config(tmp_path):
    return load_config("test", [f"lakehouse.root={tmp_path / 'lake'}"])


def deliver(config, feed: str, name: str, lines: list[str]) -> Path:
    folder = Path(config.landing_path()) / feed
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_every_line_lands_once_and_reruns_load_nothing(spark, lake_config):
    deliver(
        lake_config, "clickstream", "clickstream-2026-11-01-00000.jsonl", [f'{{"n": {i}}}' for i in range(40)]
    )
    deliver(
        lake_config, "clickstream", "clickstream-2026-11-02-00000.jsonl", ["garbage ünï", "", '{"n": 99}']
    )
    first = load_feed_to_bronze(spark, lake_config, "clickstream")
    assert first.rows == 43
    table = Lakehouse(spark, lake_config).table("bronze", "clickstream")
    rows = table.read()
    assert rows.count() == 43
    assert rows.where(F.col("value") == "garbage ünï").count() == 1
    assert rows.where(F.col("value") == "").count() == 1  # empty lines are kept raw, silver decides
    per_file = {
        r._source_file.rsplit("/", 1)[-1]: r["count"] for r in rows.groupBy("_source_file").count().collect()
    }
    assert per_file == {"clickstream-2026-11-01-00000.jsonl": 40, "clickstream-2026-11-02-00000.jsonl": 3}
    version = table.version()
    again = load_feed_to_bronze(spark, lake_config, "clickstream")
    assert again.rows == 0 and table.version() == version

    deliver(lake_config, "clickstream", "clickstream-2026-11-03-00000.jsonl", ['{"n": 100}', '{"n": 101}'])
    third = load_feed_to_bronze(spark, lake_config, "clickstream")
    assert third.rows == 2
    assert table.read().count() == 45


def test_batch_replayed_after_crash_is_not_committed_twice(spark, lake_config):
    deliver(
        lake_config, "telemetry", "telemetry-2026-11-01-00000.jsonl", [f'{{"n": {i}}}' for i in range(10)]
    )
    load_feed_to_bronze(spark, lake_config, "telemetry")
    table = Lakehouse(spark, lake_config).table("bronze", "telemetry")
    version = table.version()
    # Crash after the Delta commit but before the stream recorded the batch as done:
    commits = Path(lake_config.lakehouse.root, "_checkpoints/bronze/telemetry/commits")
    for marker in commits.iterdir():
        marker.unlink()
    replay = load_feed_to_bronze(spark, lake_config, "telemetry")
    assert replay.rows == 0 and replay.skipped_batches == 1
    assert table.version() == version
    assert table.read().count() == 10


def test_missing_landing_folder_is_a_clear_error(spark, lake_config):
    shutil.rmtree(lake_config.lakehouse.root, ignore_errors=True)
    with pytest.raises(JobFailed, match="landing folder .*clickstream does not exist"):
        load_feed_to_bronze(spark, lake_config, "clickstream")


def test_a_rerun_with_no_new_landing_file_is_skipped_and_commits_nothing(spark, lake_config):
    """The bronze job of a date reruns only when its landing listing changed: a rename or a copy under
    a new name is a new delivery (loaded again, silver deduplicates), an unchanged listing is skipped."""
    ingest = registry()["commerce.ingest_bronze"]
    day = dt.date(2026, 11, 3)
    first = deliver(
        lake_config, "clickstream", "clickstream-2026-11-01-00000.jsonl", ['{"n": 1}', '{"n": 2}']
    )
    assert run_job(ingest, spark, lake_config, DateRange.single(day)).details["clickstream_rows"] == 2
    table = Lakehouse(spark, lake_config).table("bronze", "clickstream")
    offsets = Path(lake_config.lakehouse.root, "_checkpoints/bronze/clickstream/offsets")
    state = (table.version(), sorted(p.name for p in offsets.iterdir()))

    again = run_job(ingest, spark, lake_config, DateRange.single(day))
    assert again.details == {"skipped": INPUTS_UNCHANGED, "noop": True}
    # No stream ran (its checkpoint has no new batch) and nothing was committed.
    assert (table.version(), sorted(p.name for p in offsets.iterdir())) == state

    renamed = first.rename(first.with_name("clickstream-2026-11-01-00009.jsonl"))
    assert run_job(ingest, spark, lake_config, DateRange.single(day)).details["clickstream_rows"] == 2
    shutil.copy(renamed, renamed.with_name("clickstream-2026-11-02-00000.jsonl"))  # the same bytes, twice
    assert run_job(ingest, spark, lake_config, DateRange.single(day)).details["clickstream_rows"] == 2
    assert run_job(ingest, spark, lake_config, DateRange.single(day)).details["skipped"] == INPUTS_UNCHANGED
    assert table.read().count() == 6

    runs = Lakehouse(spark, lake_config).table("ops", "job_runs").read().orderBy("started_at").collect()
    assert [r.status for r in runs] == ["ok", "skipped", "ok", "ok", "skipped"]
