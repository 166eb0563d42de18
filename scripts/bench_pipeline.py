"""Benchmark the README's main run: the whole job DAG on a fresh generated lake, per job, against a floor.

    .venv/bin/python scripts/bench_pipeline.py [--days 60] [--scale 1] [--end-date 2026-03-31]
                                               [--workdir DIR] [--no-generate] [--conf KEY=VALUE ...]

Generates ``--days`` of landing data (``lakeml generate``, as ``scripts/run-local`` does; not timed in
the pipeline total), then runs ``lakeml pipeline --env local --run-date END --since FIRST`` (the
README's main command) and reads each job's ``job_end`` line: seconds, rows in / out, share of the
total. Targets: whole run ≤ 6 minutes on a quiet 2-core machine, no job over 25 % of it.

The **floor**, measured after the run in one Spark session: a plain read of every input of the DAG
(each landing feed's files as text lines) and a plain Parquet write of them, plus a read of every
table the DAG wrote (bronze, silver, gold, ops; current snapshot) and a Parquet write of its rows to
a scratch folder. That is the I/O every design of these jobs must do at least once; pipeline ÷ floor
is printed beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lakeml.config import load_config
from lakeml.lakehouse import Lakehouse
from lakeml.session import build_spark

LAKEML = str(Path(sys.executable).with_name("lakeml"))
LAYERS = ("bronze", "silver", "gold", "ops")


def run_pipeline(end: dt.date, first: dt.date, conf: list[str]) -> tuple[float, list[dict]]:
    """The main command; its log lines pass through to stderr, the ``job_end`` events are returned."""
    args = [LAKEML, "pipeline", "--env", "local", "--run-date", str(end), "--since", str(first)]
    for item in conf:
        args += ["--conf", item]
    started = time.perf_counter()
    jobs = []
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.startswith("{") and '"job_end"' in line:
                jobs.append(json.loads(line))
    if proc.returncode:
        raise SystemExit(f"bench_pipeline: the pipeline failed (exit {proc.returncode})")
    return time.perf_counter() - started, jobs


def delta_tables(root: Path) -> list[tuple[str, str]]:
    """(layer, name) of every Delta table under the lakehouse layers."""
    return [
        (layer, d.name)
        for layer in LAYERS
        if (root / layer).is_dir()
        for d in sorted((root / layer).iterdir())
        if (d / "_delta_log").is_dir()
    ]


def floor_seconds(root: Path, landing: Path, conf: list[str]) -> tuple[float, dict[str, float]]:
    """Plain read + Parquet write of every landing feed and every table of the lake (seconds per part)."""
    config = load_config("local", conf)
    spark = build_spark(config, app_name="bench-pipeline-floor")
    lake = Lakehouse(spark, config)
    scratch = Path(tempfile.mkdtemp(prefix="floor-", dir=root.parent))
    parts: dict[str, float] = {}
    try:
        for feed in sorted(p for p in landing.iterdir() if p.is_dir()):
            started = time.perf_counter()
            spark.read.text(str(feed)).write.mode("overwrite").parquet(str(scratch / f"landing_{feed.name}"))
            parts[f"landing/{feed.name}"] = time.perf_counter() - started
        for layer, name in delta_tables(root):
            started = time.perf_counter()
            lake.table(layer, name).read().write.mode("overwrite").parquet(str(scratch / f"{layer}_{name}"))
            parts[f"{layer}/{name}"] = time.perf_counter() - started
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return sum(parts.values()), parts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, help="days of data (default: generate.days of conf/local.yaml)")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--end-date", default="2026-03-31")
    parser.add_argument("--workdir", help="keep the lakehouse here (default: a temporary folder)")
    parser.add_argument("--no-generate", action="store_true", help="reuse the workdir's landing files")
    parser.add_argument("--conf", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    end = dt.date.fromisoformat(args.end_date)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lakeml-bench-pipeline-"))
    root = workdir / "lake"
    os.environ["LAKEML_LAKEHOUSE"] = str(root)
    os.environ.setdefault("LAKEML_PII_KEY", secrets.token_hex(32))
    days = args.days or load_config("local").generate.days
    first = end - dt.timedelta(days=days - 1)
    landing = root / load_config("local").lakehouse.landing_dir
    print(f"bench_pipeline: scale {args.scale}, {days} days {first} .. {end}, lakehouse {root}", flush=True)
    if not args.no_generate:
        for layer in (*LAYERS, "_mlflow", "_checkpoints", "reports", "landing"):
            shutil.rmtree(root / layer, ignore_errors=True)
        started = time.perf_counter()
        generate = ["generate", "--env", "local", "--scale", str(args.scale), "--days", str(days)]
        subprocess.run([LAKEML, *generate, "--end-date", str(end)], check=True)
        print(f"  generate (not in the total) {time.perf_counter() - started:8.1f} s", flush=True)
    total, jobs = run_pipeline(end, first, args.conf)
    floor, parts = floor_seconds(root, landing, args.conf)

    print(f"\n  {'job':<32} {'seconds':>8} {'share':>7} {'rows in':>12} {'rows out':>12}")
    for job in jobs:
        share = job["seconds"] / total
        flag = "  ✘ over 25 %" if share > 0.25 else ""
        print(f"  {job['job']:<32} {job['seconds']:8.1f} {share:7.1%} {job.get('rows_in', 0):12,} "
              f"{job.get('rows_out', 0):12,}{flag}")  # fmt: skip
    print(f"  {'pipeline (process wall time)':<32} {total:8.1f}")
    largest = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
    print(f"  {'floor: read + write every input and output':<32} {floor:8.1f}   "
          f"({len(parts)} parts; largest: {largest})")  # fmt: skip
    print(f"  pipeline ÷ floor {total / floor:8.1f}")
    worst = max(jobs, key=lambda j: j["seconds"])
    checks = [
        ("whole run (s)", total, "<= 360", total <= 360),
        ("largest job share "
         f"({worst['job']})", worst["seconds"] / total, "<= 0.25", worst["seconds"] / total <= 0.25),
    ]  # fmt: skip
    for name, value, target, ok in checks:
        print(f"  {name:<48} {value:8.3f}   target {target:<7} {'✔' if ok else '✘'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
