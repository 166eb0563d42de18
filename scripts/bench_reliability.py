"""Reliability table: each fault the suite injects, how often, rows lost and duplicated, and the outcome.

    .venv/bin/python scripts/bench_reliability.py [--kill-points N] [--soak-operations N] [--fast]
                                                  [--no-cluster] [--report FILE] [--mask-only | --no-mask]

Runs the fault tests (tests/test_kill_points.py, test_races.py, test_storage_faults.py,
test_bad_input_corpus.py and the executor-loss tests of test_cluster.py) with
``LAKEML_RELIABILITY_REPORT`` set, so each writes one line per fault it checked
(tests/reliability_report.py), then prints them as a table. The soak runs 50 operations per process
and the kill chain 22 kill points by default (``--fast``: 5 and 5, as the test suite does; the full
chain took 37 minutes on a loaded machine; the 4 x 50 soak 150 s on delta-rs and 1024 s on delta-spark
at load ~20). The table ends with the load average at the start and the end. A fault test that failed or was
skipped gets a row
saying so instead of a result.

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
# Quick ones first: a run stopped early still has their lines in the report.
TESTS = [
    "tests/test_storage_faults.py",
    "tests/test_bad_input_corpus.py",
    "tests/test_races.py",
    "tests/test_kill_points.py",
]
CLUSTER_TESTS = [
    "tests/test_cluster.py::test_silver_job_losing_a_worker_finishes_with_the_clean_runs_tables",
    "tests/test_cluster.py::test_training_job_losing_a_worker_registers_the_clean_runs_model",
]


def run_fault_tests(
    report: Path, kill_points: int, soak_operations: int, cluster: bool
) -> tuple[list[dict], int, str]:
    """Run the fault tests (``kill_points`` 0: without the kill chain); their lines, pytest's exit code
    and the tail of its output."""
    env = {**os.environ, "LAKEML_RELIABILITY_REPORT": str(report)}
    env["LAKEML_SOAK_OPERATIONS"] = str(soak_operations)
    env["LAKEML_FAULT_SUITE"] = "1"  # the executor-loss tests skip in the default test run
    env["LAKEML_KILL_POINTS"] = str(kill_points)
    jars = REPO.parent / "shared" / "deltajars"
    if not env.get("LAKEML_DELTA_JARS") and jars.is_dir():
        env["LAKEML_DELTA_JARS"] = str(jars)
    tests = [t for t in TESTS if kill_points or "kill_points" not in t] + (CLUSTER_TESTS if cluster else [])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    # Tests that failed or were skipped wrote no line: one row each, so the table never hides them.
    for line in done.stdout.splitlines():
        for status in ("FAILED", "ERROR", "SKIPPED"):
            if line.startswith(status + " "):
                test, _, why = line[len(status) + 1 :].partition(" - ")
                rows.append(
                    {"fault": test.split("::")[-1][:72], "runs": 0, "rows_lost": "-",
                     "rows_duplicated": "-", "outcome": f"{status}: {(why or test).strip()[:160]}"}
                )  # fmt: skip
    return rows, done.returncode, done.stdout[-4000:]


def print_table(rows: list[dict]) -> None:
    print(f"{'fault':<72}{'runs':>6}{'rows lost':>11}{'rows dup':>10}  outcome")
    for r in rows:
        print(f"{r['fault']:<72}{r['runs']:>6}{r['rows_lost']:>11}{r['rows_duplicated']:>10}  {r['outcome']}")


def masking_ratio(work: Path, scale: int) -> None:
    """Bronze's columns with and without PAN masking on the same lines: rows/s and their ratio."""
    import datetime as dt

    from pyspark.sql import functions as F

    from lakeml.config import load_config
    from lakeml.ingest.bronze import with_bronze_columns
    from lakeml.session import build_spark
    from lakeml.synthetic.landing import run_generation

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
            f"{feed:<14}{rows:>10,}{rows / plain_s:>14,.0f}{rows / masked_s:>15,.0f}"
            f"{plain_s / masked_s:>8.2f}"
            "   (ratio = masked rows/s ÷ plain rows/s)"
        )
        lines.unpersist()
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-points", type=int, default=22, help="SIGKILL points of the kill chain (0: no "
                                                                    "chain)")
    parser.add_argument("--soak-operations", type=int, default=50, help="appends/merges per soak process")
    parser.add_argument("--fast", action="store_true", help="5 kill points and 5 soak operations, as CI")
    parser.add_argument("--no-cluster", action="store_true", help="skip the executor-loss runs on a cluster")
    parser.add_argument("--mask-only", action="store_true", help="only the PAN masking ratio")
    parser.add_argument("--no-mask", action="store_true", help="skip the PAN masking ratio")
    parser.add_argument("--mask-scale", type=int, default=20, help="generator scale of the masking lines")
    parser.add_argument(
        "--report",
        type=Path,
        help="JSON-lines file the fault tests append to (default: a temporary one); lines already in it "
        "(e.g. from a separate run of tests/test_cluster.py with LAKEML_RELIABILITY_REPORT=FILE) are printed "
        "too",
    )
    args = parser.parse_args()
    kill_points, soak = (5, 5) if args.fast else (args.kill_points, args.soak_operations)
    os.environ.setdefault("LAKEML_PII_KEY", secrets.token_hex(32))
    work = Path(tempfile.mkdtemp(prefix="lakeml-bench-reliability-"))
    try:
        code = 0
        if not args.mask_only:
            began, load_before = time.monotonic(), os.getloadavg()
            report = args.report or work / "reliability.jsonl"
            rows, code, tail = run_fault_tests(report, kill_points, soak, not args.no_cluster)
            print_table(rows)
            load_after = os.getloadavg()
            print(
                f"(fault tests: {time.monotonic() - began:.0f} s, {kill_points} kill points, "
                f"soak {soak} operations per process, {'no ' if args.no_cluster else ''}cluster, "
                f"pytest exit {code}; load average 1/5/15 min "
                f"{'/'.join(f'{x:.1f}' for x in load_before)} at the start, "
                f"{'/'.join(f'{x:.1f}' for x in load_after)} at the end, on {os.cpu_count()} cores)"
            )
            if code != 0:
                print(tail)
        if not args.no_mask:
            masking_ratio(work, args.mask_scale)
        sys.exit(code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
