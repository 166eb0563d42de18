"""Reliability table: each fault the suite injects, how often, rows lost and duplicated, and the outcome.

    .venv/bin/python scripts/bench_reliability.py [--fast] [--mask-only]

Runs the fault tests (tests/test_kill_points.py, test_races.py, test_storage_faults.py,
test_bad_input_corpus.py) with ``LAKEML_RELIABILITY_REPORT`` set, so each writes one line per fault
it checked (tests/reliability_report.py), then prints them as a table. The soak runs 50 operations
per process and the kill chain 22 kill points (``--fast``: 5 and 5, as the test suite does). A fault whose test failed shows the failure instead.

Then the cost of PAN masking at load: bronze's column expressions with and without ``mask_pans``
on the same generated transaction and clickstream lines, written as Parquet, best of three in one
warm JVM; prints rows/s of each and the ratio masked ÷ unmasked (the baseline measured in this run).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_kill_points.py",
    "tests/test_races.py",
    "tests/test_storage_faults.py",
    "tests/test_bad_input_corpus.py",
]


def run_fault_tests(work: Path, fast: bool) -> tuple[list[dict], int, str]:
    report = work / "reliability.jsonl"
    env = {**os.environ, "LAKEML_RELIABILITY_REPORT": str(report)}
    env["LAKEML_SOAK_OPERATIONS"] = "5" if fast else "50"
    env["LAKEML_KILL_POINTS"] = "5" if fast else "22"
    jars = REPO.parent / "shared" / "deltajars"
    if not env.get("LAKEML_DELTA_JARS") and jars.is_dir():
        env["LAKEML_DELTA_JARS"] = str(jars)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return rows, done.returncode, done.stdout[-4000:]


def print_table(rows: list[dict]) -> None:
    print(f"{'fault':<58}{'runs':>6}{'rows lost':>11}{'rows dup':>10}  outcome")
    for r in rows:
        print(f"{r['fault']:<58}{r['runs']:>6}{r['rows_lost']:>11}{r['rows_duplicated']:>10}  {r['outcome']}")


def masking_ratio(work: Path, scale: int) -> None:
    """Bronze's columns with and without PAN masking on the same lines: rows/s and their ratio."""
    import datetime as dt

    from pyspark.sql import functions as F

    from lakeml.config import load_config
    from lakeml.generate import run_generation
    from lakeml.ingest.bronze import with_bronze_columns
    from lakeml.session import build_spark

    config = load_config("local", [f"lakehouse.root={work / 'lake'}", "spark.conf.spark.ui.enabled=false"])
    spark = build_spark(config, app_name="lakeml-bench-reliability")
    end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    run_generation(spark, config.landing_path(), scale=scale, days=2, seed=7, end_date=end)
    key = os.environ["LAKEML_PII_KEY"].encode()
    print(f"\n{'feed':<14}{'rows':>10}{'plain rows/s':>14}{'masked rows/s':>15}{'ratio':>8}")
    for feed in ("transactions", "clickstream"):
        lines = (
            spark.read.format("text")
            .load(str(Path(config.landing_path()) / feed))
            .select("value", "_metadata")
        )
        lines = lines.cache()
        rows = lines.count()
        masked = with_bronze_columns(lines, feed, 0, key)
        # The same columns with the line kept as read: what bronze cost before masking.
        plain = lines.select(
            F.make_valid_utf8(F.col("value")).alias("value"),
            F.when(~F.is_valid_utf8(F.col("value")), F.col("value").cast("binary")).alias("raw_bytes"),
            F.col("_metadata.file_path").alias("_source_file"),
            F.current_timestamp().alias("_ingested_at"),
            F.lit(f"{feed}-00000000").alias("_batch_id"),
            F.current_date().alias("_ingest_date"),
        )

        def best(df) -> float:  # type: ignore[no-untyped-def]
            times = []
            for _ in range(3):
                began = time.perf_counter()
                df.write.mode("overwrite").parquet(str(work / "out"))
                times.append(time.perf_counter() - began)
            return min(times)

        plain_s, masked_s = best(plain), best(masked)
        print(
            f"{feed:<14}{rows:>10,}{rows / plain_s:>14,.0f}{rows / masked_s:>15,.0f}{plain_s / masked_s:>8.2f}"
            "   (ratio = masked rows/s ÷ plain rows/s)"
        )
        lines.unpersist()
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="soak with 8 operations per process, not 50")
    parser.add_argument("--mask-only", action="store_true", help="only the PAN masking ratio")
    parser.add_argument("--mask-scale", type=int, default=20, help="generator scale of the masking lines")
    args = parser.parse_args()
    os.environ.setdefault("LAKEML_PII_KEY", secrets.token_hex(32))
    work = Path(tempfile.mkdtemp(prefix="lakeml-bench-reliability-"))
    try:
        code = 0
        if not args.mask_only:
            began = time.monotonic()
            rows, code, tail = run_fault_tests(work, args.fast)
            print_table(rows)
            print(f"(fault tests: {time.monotonic() - began:.0f} s, pytest exit {code})")
            if code != 0:
                print(tail)
        masking_ratio(work, args.mask_scale)
        sys.exit(code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
