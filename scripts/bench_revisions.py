"""Compare the README's main run at two git revisions, in one run, on the same landing files.

    .venv/bin/python scripts/bench_revisions.py --base REV [--head REV] [--days 60] [--scale 1]
                                                [--end-date 2026-03-31] [--workdir DIR] [--conf KEY=VALUE ...]

For a change meant to leave behaviour and speed alone (a refactor): did any figure get worse? The
landing files are generated once (by this checkout's code), then each revision (``--base``, then
``--head``, default this checkout) runs ``lakeml pipeline --env local`` on its own fresh lake built
from a hard-linked copy of them, with that revision's ``lib/`` and ``conf/`` (a detached git worktree;
this checkout's virtualenv, so both revisions must share their dependencies). Each job's
``job_end`` line gives its seconds, rows in / out and its own figures (trainers: their metrics).

With ``--repeat N`` each revision runs N times in ABBA order and the medians are compared (one run
of a job moves by 10-20 % between runs on this machine; the whole pipeline by ~10 %).

Printed per job: (median) seconds at both and head ÷ base (✘ above ``--slower`` = 1.10, the run-to-run noise
of this machine), rows in / out (✘ when they differ), and every numeric figure both revisions print
(✘ when it moved the wrong way for a metric whose direction the name tells: auc, auprc, precision,
recall, ndcg, map, coverage up; rmse, mae, brier, loss down).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lakeml.config import PROJECT_ROOT, load_config

LAKEML = str(Path(sys.executable).with_name("lakeml"))
HIGHER_IS_BETTER = ("auc", "auprc", "precision", "recall", "ndcg", "map", "coverage")
LOWER_IS_BETTER = ("rmse", "mae", "brier", "loss")
NOT_FIGURES = {"seconds", "rows_in", "rows_out"}


def checkout(rev: str, workdir: Path) -> Path:
    """A detached worktree of ``rev`` under ``workdir`` (removed by ``drop_checkout``)."""
    tree = workdir / f"tree-{rev.replace('/', '_')}"
    subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "worktree", "add", "-q", "--detach", str(tree), rev], check=True
    )
    return tree


def drop_checkout(tree: Path) -> None:
    subprocess.run(["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def run_pipeline(
    tree: Path, root: Path, end: dt.date, first: dt.date, conf: list[str]
) -> tuple[float, list[dict]]:
    """The main command with ``tree``'s code and conf on the lake ``root``; its ``job_end`` events."""
    env = {
        **os.environ,
        "LAKEML_LAKEHOUSE": str(root),
        "PYTHONPATH": str(tree / "lib"),  # ahead of the venv's editable path to this checkout
        "LAKEML_CONF_DIR": str(tree / "conf"),
    }
    args = [LAKEML, "pipeline", "--env", "local", "--run-date", str(end), "--since", str(first)]
    for item in conf:
        args += ["--conf", item]
    started = time.perf_counter()
    jobs = []
    log = root.parent / "pipeline.log"  # the run's own output, kept for a look after (or at a failure)
    with (
        log.open("w") as out,
        subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=tree) as proc,
    ):
        assert proc.stderr is not None
        for line in proc.stderr:
            out.write(line)
            if line.startswith("{") and '"job_end"' in line:
                job = json.loads(line)
                jobs.append(job)
                print(f"    {job['job']:<32} {job['seconds']:8.1f} s {job['status']}", flush=True)
    if proc.returncode:
        raise SystemExit(
            f"bench_revisions: the pipeline failed at {tree.name} (exit {proc.returncode}); see {log}"
        )
    return time.perf_counter() - started, jobs


def median_run(label: str, runs: list[tuple[float, list[dict]]]) -> tuple[float, list[dict], list[str]]:
    """The runs of one revision as one: median wall time and job seconds; rows that differ between runs."""
    first_jobs = runs[0][1]
    jobs, unstable = [], []
    for job in first_jobs:
        same = [next(j for j in run_jobs if j["job"] == job["job"]) for _, run_jobs in runs]
        if len({(j.get("rows_in"), j.get("rows_out")) for j in same}) > 1:
            unstable.append(f"{label} {job['job']}: rows differ between runs")
        jobs.append({**job, "seconds": statistics.median(j["seconds"] for j in same)})
    return statistics.median(total for total, _ in runs), jobs, unstable


def edited(tree: Path) -> bool:
    """Whether the checkout has uncommitted changes (then head is not exactly its commit)."""
    status = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return bool(status.stdout.strip())


def moved_wrong_way(name: str, base: float, head: float) -> bool:
    """True when a metric whose name tells its direction got worse (beyond float noise)."""
    key = name.lower()
    if abs(head - base) <= 1e-9 * max(1.0, abs(base)):
        return False
    if any(word in key for word in LOWER_IS_BETTER):
        return head > base
    if any(word in key for word in HIGHER_IS_BETTER):
        return head < base
    return False


def compare(base_jobs: list[dict], head_jobs: list[dict], slower: float) -> list[str]:
    """Print the per-job comparison; the findings marked ✘."""
    findings: list[str] = []
    head_by_job = {job["job"]: job for job in head_jobs}
    print(f"\n  {'job':<32} {'base s':>8} {'head s':>8} {'head÷base':>9} {'rows in':>12} {'rows out':>12}")
    for base in base_jobs:
        head = head_by_job.get(base["job"])
        if head is None:
            findings.append(f"{base['job']}: not run at head")
            continue
        ratio = head["seconds"] / base["seconds"] if base["seconds"] else float("nan")
        rows_same = (base.get("rows_in"), base.get("rows_out")) == (head.get("rows_in"), head.get("rows_out"))
        problems = [] if ratio <= slower else [f"slower ({ratio:.2f}x)"]
        problems += [] if rows_same else [f"rows {base.get('rows_in')}/{base.get('rows_out')} at base"]
        flag = "".join(f"  ✘ {problem}" for problem in problems)
        print(f"  {base['job']:<32} {base['seconds']:8.1f} {head['seconds']:8.1f} {ratio:9.2f} "
              f"{head.get('rows_in', 0):12,} {head.get('rows_out', 0):12,}{flag}")  # fmt: skip
        findings += [f"{base['job']}: {problem}" for problem in problems]
        for name in sorted(set(base) & set(head) - NOT_FIGURES):
            if not all(
                isinstance(job[name], int | float) and not isinstance(job[name], bool) for job in (base, head)
            ):
                continue
            if base[name] == head[name]:
                continue
            worse = moved_wrong_way(name, float(base[name]), float(head[name]))
            print(f"      {name:<40} {base[name]!s:>14} -> {head[name]!s:<14}{'  ✘ worse' if worse else ''}")
            if worse:
                findings.append(f"{base['job']}.{name}: {base[name]} -> {head[name]}")
    for job in head_jobs:
        if job["job"] not in {b["job"] for b in base_jobs}:
            print(f"  {job['job']:<32} {'—':>8} {job['seconds']:8.1f}   (new at head)")
    return findings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the revision before the change (git rev)")
    parser.add_argument(
        "--head", help="the revision after (default: this checkout, uncommitted edits included)"
    )
    parser.add_argument("--days", type=int, help="days of data (default: generate.days of conf/local.yaml)")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--end-date", default="2026-03-31")
    parser.add_argument("--workdir", help="keep the lakes here (default: a temporary folder)")
    parser.add_argument(
        "--slower", type=float, default=1.10, help="head ÷ base seconds above this is flagged"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per revision, ABBA order; medians compared"
    )
    parser.add_argument("--conf", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    end = dt.date.fromisoformat(args.end_date)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lakeml-bench-revisions-"))
    os.environ.setdefault("LAKEML_PII_KEY", secrets.token_hex(32))
    config = load_config("local")
    days = args.days or config.generate.days
    first = end - dt.timedelta(days=days - 1)

    generated = workdir / "generated"
    shutil.rmtree(generated, ignore_errors=True)
    print(f"bench_revisions: scale {args.scale}, {days} days {first} .. {end}, workdir {workdir}", flush=True)
    generate = [
        "generate",
        "--env",
        "local",
        "--scale",
        str(args.scale),
        "--days",
        str(days),
        "--end-date",
        str(end),
    ]
    subprocess.run([LAKEML, *generate], check=True, env={**os.environ, "LAKEML_LAKEHOUSE": str(generated)})

    trees = {"base": checkout(args.base, workdir)}
    trees["head"] = checkout(args.head, workdir) if args.head else PROJECT_ROOT
    runs: dict[str, list[tuple[float, list[dict]]]] = {"base": [], "head": []}
    try:
        for repeat in range(args.repeat):
            # ABBA...: a drift of the machine over the runs weighs on both revisions alike
            for label in ("base", "head") if repeat % 2 == 0 else ("head", "base"):
                tree = trees[label]
                rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
                root = workdir / label / "lake"
                shutil.rmtree(root.parent, ignore_errors=True)
                root.mkdir(parents=True)
                landing = config.lakehouse.landing_dir
                subprocess.run(["cp", "-al", str(generated / landing), str(root / landing)], check=True)
                suffix = " (+ uncommitted edits)" if tree == PROJECT_ROOT and edited(tree) else ""
                print(f"  {label} = {rev}{suffix}, run {repeat + 1} of {args.repeat}:", flush=True)
                runs[label].append(run_pipeline(tree, root, end, first, args.conf))
    finally:
        for tree in trees.values():
            if tree != PROJECT_ROOT:
                drop_checkout(tree)

    results = {label: median_run(label, label_runs) for label, label_runs in runs.items()}
    findings = [finding for _, _, unstable in results.values() for finding in unstable]
    findings += compare(results["base"][1], results["head"][1], args.slower)
    base_total, head_total = results["base"][0], results["head"][0]
    wall = f"{base_total:8.1f} {head_total:8.1f} {head_total / base_total:9.2f}"
    print(f"  {'pipeline (process wall time)':<32} {wall}")
    if head_total / base_total > args.slower:
        findings.append(f"pipeline wall time: {base_total:.1f} -> {head_total:.1f} s")
    print(f"\n  worse at head: {len(findings)}" + "".join(f"\n    ✘ {f}" for f in findings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
