"""``lakeml generate``: every feed's lines built by its domain module and written as landing files."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from datetime import date

from pyspark.sql import SparkSession

from lakeml.errors import LakemlError
from lakeml.session import session_settings
from lakeml.synthetic import banking, commerce, maintenance
from lakeml.synthetic.core import (
    GENERATION_SQL_CONF,
    FeedBuilder,
    GenerateReport,
    files_for,
    is_local,
    local_path,
    make_window,
    write_feed,
)


def feed_builders() -> dict[str, FeedBuilder]:
    """Feed name → the domain module's function that builds its lines."""
    return {
        "clickstream": commerce.clickstream_feed,
        "transactions": banking.transactions_feed,
        "chargebacks": banking.chargebacks_feed,
        "telemetry": maintenance.telemetry_feed,
        "maintenance": maintenance.maintenance_feed,
    }


def run_generation(
    spark: SparkSession, landing_dir: str, *, scale: int, days: int, seed: int, end_date: date
) -> GenerateReport:
    """Generate all five feeds into ``landing_dir`` and report lines, files and seconds per feed."""
    window = make_window(scale=scale, days=days, seed=seed, end_date=end_date)
    started = time.perf_counter()
    landing = local_path(landing_dir) if is_local(landing_dir) else landing_dir
    if is_local(landing):
        landing = os.path.abspath(landing)
    files = files_for(spark, landing)
    files.makedirs(landing)
    tmp_root = f"{landing.rstrip('/')}/_tmp-generate-{uuid.uuid4().hex}"
    results = []
    try:
        with session_settings(spark, GENERATION_SQL_CONF):
            for feed, build in feed_builders().items():
                feed_started = time.perf_counter()
                lines = build(spark, window)
                if lines.feed != feed:
                    raise LakemlError(f"the generator for {feed} produced feed {lines.feed}")
                result = write_feed(spark, lines, window, landing, tmp_root)
                seconds = round(time.perf_counter() - feed_started, 3)
                results.append(dataclasses.replace(result, seconds=seconds))
    finally:
        files.remove_tree(tmp_root)
    return GenerateReport(landing, window, tuple(results), round(time.perf_counter() - started, 3))


def generate_landing(
    spark: SparkSession, landing_dir: str, *, scale: int, days: int, seed: int, end_date: date
) -> dict[str, int]:
    """Write the landing files of all five feeds; return the lines written per feed (CSV headers excluded)."""
    return run_generation(spark, landing_dir, scale=scale, days=days, seed=seed, end_date=end_date).lines
