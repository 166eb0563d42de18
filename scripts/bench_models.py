"""Benchmark the three models on generated data: quality against the targets, and training time.

    .venv/bin/python scripts/bench_models.py [--scale 10] [--days 70] [--workdir DIR]
                                             [--reuse | --no-generate] [--models fraud,failure,als] [--conf KEY=VALUE ...]
                                             [--als-interactions 5000000]

Generates ``--days`` of landing data at ``--scale`` (``lakeml generate``), runs bronze → silver →
gold through the real jobs (banking features for every day, machine features for the last 14 days,
the commerce snapshot of the last day; 70 days = 46-day label window + 3 test + 3 validation + 18
train), then trains each model in one session and prints each result as soon as it is known:

- ALS precision@10 vs the popularity baseline (target ≥ 2×);
- fraud AUPRC (target ≥ 0.7 and ≥ 10× the test positive rate);
- RUL RMSE vs the mean-RUL-by-age baseline (target ≤ 0.6×);
- training seconds per model, and ALS seconds per iteration on a synthetic ≥ 5 M-interaction table
  (fit with 1 and with 6 iterations; per iteration = difference ÷ 5).

The data settings (chargebacks land within 46 days, so the label window is 46 days; 3-day validation
and test) come from conf/local.yaml, the same as ``scripts/run-local``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F

from lakeml.config import load_config
from lakeml.domains.banking.fraud_model import train_fraud_model
from lakeml.domains.commerce.recommender import train_recommender
from lakeml.domains.maintenance.failure_model import train_failure_models
from lakeml.session import build_spark

LAKEML = str(Path(sys.executable).with_name("lakeml"))
MAINTENANCE_DAYS = 14


def _run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([LAKEML, *args, "--env", "local"], check=True)
    return time.perf_counter() - started


DOMAIN_OF = {"fraud": "banking", "failure": "maintenance", "als": "commerce"}


def build_gold(
    end: dt.date, days: int, scale: int, domains: Sequence[str], generate: bool = True
) -> dict[str, float]:
    """(Generate and) landing → gold of ``domains`` through the real jobs; seconds per step."""
    first = end - dt.timedelta(days=days - 1)
    since = {"banking": first, "maintenance": end - dt.timedelta(days=MAINTENANCE_DAYS - 1), "commerce": end}
    seconds = {}
    if generate:
        seconds["generate"] = _run(
            "generate", "--scale", str(scale), "--days", str(days), "--end-date", str(end)
        )
    for domain in domains:
        seconds[f"{domain} bronze+silver"] = _run(
            "pipeline", "--to", f"{domain}.build_silver", "--run-date", str(end)
        )
        seconds[f"{domain} features"] = _run(
            "run", f"{domain}.build_features", "--run-date", str(end), "--since", str(since[domain])
        )
    return seconds


def pii_key(workdir: Path) -> str:
    """The bench lake's PII key, kept in the workdir so ``--reuse`` tokenizes new data the same way."""
    path = workdir / "pii.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def als_seconds_per_iteration(spark, interactions: int, rank: int = 16) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """ALS implicit fit time with 1 and 6 iterations on a synthetic table; returns (per iteration, 6-iteration fit)."""
    users, items = max(1, interactions // 100), max(1, interactions // 500)
    data = (
        spark.range(interactions, numPartitions=spark.sparkContext.defaultParallelism * 2)
        .select(
            (F.xxhash64("id", F.lit(1)) % users).cast("int").alias("u"),
            F.pmod(F.xxhash64("id", F.lit(2)), F.lit(items)).cast("int").alias("i"),
            (1 + F.rand(3) * 4).cast("float").alias("r"),
        )
        .select(F.abs("u").alias("u"), "i", "r")
        .cache()
    )
    data.count()
    times = {}
    for iterations in (1, 6):
        als = ALS(
            userCol="u", itemCol="i", ratingCol="r", implicitPrefs=True, rank=rank, maxIter=iterations, seed=1
        )
        started = time.perf_counter()
        model = als.fit(data)
        model.userFactors.count()  # factors are computed lazily until used
        times[iterations] = time.perf_counter() - started
    data.unpersist()
    return (times[6] - times[1]) / 5, times[6]


def report_fraud(fraud: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  fraud    AUPRC {fraud['auprc']:.4f} ({fraud['family']}; baseline {fraud['baseline_auprc']:.4f}), positive "
          f"rate {fraud['positive_rate']:.4%}, ROC AUC {fraud['roc_auc']:.4f}, precision/recall at the alert budget "
          f"{fraud['precision_at_budget']:.3f}/{fraud['recall_at_budget']:.3f}, train rows {fraud['rows_train']:,}, test rows {fraud['rows_test']:,}", flush=True)  # fmt: skip
    ratio = fraud["auprc"] / max(fraud["positive_rate"], 1e-12)
    return [("fraud AUPRC", fraud["auprc"], ">= 0.7", fraud["auprc"] >= 0.7),
            ("fraud AUPRC ÷ positive rate", ratio, ">= 10", ratio >= 10)]  # fmt: skip


def report_failure(failure: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  failure  RUL RMSE {failure['rmse']:.2f} (baseline {failure['baseline_rmse']:.2f}), failure AUPRC "
          f"{failure['auprc']:.4f}, train rows {failure['rows_train']:,}", flush=True)  # fmt: skip
    ratio = failure["rmse"] / failure["baseline_rmse"]
    return [("RUL RMSE ÷ baseline", ratio, "<= 0.6", ratio <= 0.6)]


def report_als(als: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  als      precision@10 {als['precision_at_k']:.4f} (popularity {als['baseline_precision_at_k']:.4f}), "
          f"pairs {als['rows_train'] + als['rows_validation'] + als['rows_test']:,}", flush=True)  # fmt: skip
    ratio = als["precision_at_k"] / max(als["baseline_precision_at_k"], 1e-12)
    return [("ALS precision@10 ÷ popularity", ratio, ">= 2", ratio >= 2)]


MODELS = {
    "fraud": (train_fraud_model, report_fraud),
    "failure": (train_failure_models, report_failure),
    "als": (train_recommender, report_als),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--end-date", default="2026-03-31")
    parser.add_argument("--workdir", help="keep the lakehouse here (default: a temporary folder)")
    parser.add_argument(
        "--reuse", action="store_true", help="skip generation and gold builds (workdir must hold them)"
    )
    parser.add_argument(
        "--no-generate", action="store_true", help="reuse the workdir's landing files, build the gold tables"
    )
    parser.add_argument("--models", default="fraud,failure,als", help="comma-separated subset to train")
    parser.add_argument("--conf", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--als-interactions", type=int, default=5_000_000, help="0 skips the timing")
    args = parser.parse_args()
    end = dt.date.fromisoformat(args.end_date)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lakeml-bench-models-"))
    os.environ["LAKEML_LAKEHOUSE"] = str(workdir / "lake")
    os.environ.setdefault("LAKEML_PII_KEY", pii_key(workdir))
    names = args.models.split(",")
    print(f"bench_models: scale {args.scale}, {args.days} days ending {end}, lakehouse {workdir / 'lake'}"
          + (f", overrides {args.conf}" if args.conf else ""), flush=True)  # fmt: skip
    if not args.reuse:
        for step, s in build_gold(
            end, args.days, args.scale, [DOMAIN_OF[n] for n in names], not args.no_generate
        ).items():
            print(f"  build  {step:<28} {s:8.1f} s", flush=True)

    config = load_config("local", args.conf)
    spark = build_spark(config, app_name="bench-models")
    checks: list[tuple[str, float, str, bool]] = []
    for name in names:
        train, report = MODELS[name]
        started = time.perf_counter()
        result = train(spark, config, end)
        seconds = time.perf_counter() - started
        checks += report(result)
        print(f"  training seconds {name:<15} {seconds:8.1f}", flush=True)
    if args.als_interactions:
        per_iteration, fit6 = als_seconds_per_iteration(spark, args.als_interactions)
        print(f"  ALS seconds per iteration at {args.als_interactions:,} interactions: {per_iteration:.2f} "
              f"(6-iteration fit {fit6:.1f} s)", flush=True)  # fmt: skip
    spark.stop()
    for name, value, target, ok in checks:
        print(f"  {name:<32} {value:8.3f}   target {target:<6} {'✔' if ok else '✘'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
