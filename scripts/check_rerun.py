"""Nothing new, nothing done, measured: run a command (default: the README's main command) on a lake
that already holds its tables, and print what that rerun cost and changed.

    LAKEML_LAKEHOUSE=/tmp/lake24 .venv/bin/python scripts/check_rerun.py -- bash scripts/run-local

Before and after the command it reads the version of every Delta table under the lakehouse root and
the number of model versions in the MLflow registry; afterwards the ``ops/job_runs`` rows the command
added. It prints the rerun's total job seconds (the sum of its job runs' ``seconds``) against the
target, each job's status and seconds, every table that got a new version (``ops/job_runs`` records
every run, so it is listed apart) and the registry's version count before and after. Exit code 1
when the target is missed or anything was recomputed, so it can gate a benchmark run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from deltalake import DeltaTable

from lakeml.config import load_config
from lakeml.lakehouse import Lakehouse

# Every run of a job is a row here, skipped or not: the one table a rerun must change.
RUN_LOG = "ops/job_runs"


def table_versions(root: Path) -> dict[str, int]:
    """``layer/name`` -> current Delta version, for every table under the lakehouse root."""
    return {
        f"{layer}/{path.name}": DeltaTable(str(path)).version()
        for layer in Lakehouse.LAYERS
        for path in sorted((root / layer).glob("*"))
        if (path / "_delta_log").is_dir()
    }


def registry_versions(tracking_uri: str) -> int:
    """Model versions in the registry, over every registered model."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    return sum(
        len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()
    )


def runs_since(root: Path, started: dt.datetime) -> list[dict]:
    """The ops/job_runs rows of job runs that started at or after ``started`` (a small ops table)."""
    path = root / RUN_LOG
    if not (path / "_delta_log").is_dir():
        return []
    rows = (
        DeltaTable(str(path)).to_pyarrow_table(columns=["job", "status", "seconds", "started_at"]).to_pylist()
    )
    return sorted((r for r in rows if r["started_at"] >= started), key=lambda r: r["started_at"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--env", default="local", help="config environment (for the lakehouse root and registry)"
    )
    parser.add_argument("--target-seconds", type=float, default=60.0, help="job seconds the rerun may spend")
    parser.add_argument(
        "command", nargs="*", default=["bash", "scripts/run-local"], help="the rerun (after --)"
    )
    args = parser.parse_args(argv)
    from lakeml.ml.tracking import tracking_uri

    config = load_config(args.env)
    root = Path(config.lakehouse.root).resolve()
    uri = tracking_uri(config)
    before, models_before = table_versions(root), registry_versions(uri)
    if not before:
        print(f"check_rerun: no Delta table under {root}: run the command once first", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    wall = time.perf_counter()
    done = subprocess.run(args.command, check=False)
    wall = time.perf_counter() - wall
    after, models_after = table_versions(root), registry_versions(uri)
    runs = runs_since(root, started)

    job_seconds = sum(r["seconds"] for r in runs)
    changed = {n: (before.get(n), v) for n, v in after.items() if before.get(n) != v and n != RUN_LOG}
    print(f"\ncheck_rerun: {' '.join(args.command)} on {root} (exit {done.returncode}, wall {wall:.0f} s)")
    for r in runs:
        print(f"  {r['job']:<36} {r['status']:<8} {r['seconds']:8.1f} s")
    print(
        f"  job runs: {len(runs)}, skipped (inputs unchanged): {sum(r['status'] == 'skipped' for r in runs)}"
    )
    met = job_seconds <= args.target_seconds
    print(
        f"  total job seconds: {job_seconds:.1f} (target <= {args.target_seconds:g}: "
        f"{'met' if met else 'NOT met'})"
    )
    print(f"  tables: {len(after)}; with a new version (besides {RUN_LOG}): {len(changed)}")
    for name, (old, new) in sorted(changed.items()):
        print(f"    {name}: version {old} -> {new}")
    print(f"  {RUN_LOG}: version {before.get(RUN_LOG)} -> {after.get(RUN_LOG)} (one row per job run)")
    print(f"  registry model versions: {models_before} -> {models_after}")
    ok = done.returncode == 0 and met and not changed and models_after == models_before
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
