"""Benchmark the three models on generated data: quality against the targets, and training time.

    .venv/bin/python scripts/bench_models.py [--scale 10] [--days 70] [--workdir DIR]
                                             [--reuse | --no-generate] [--models fraud,failure,als] [--conf KEY=VALUE ...]
                                             [--als-interactions 5000000]

Generates ``--days`` of landing data at ``--scale`` (``lakeml generate``), runs bronze → silver →
gold through the real jobs (banking features for every day, machine features for the last 14 days,
the commerce snapshot of the last day; 70 days = 46-day label window + 3 test + 3 validation + 18
train), then trains each model in one session and prints each result as soon as it is known:

- ALS precision@10 vs the popularity baseline (target ≥ 2×), NDCG and precision at every k of ``ks``
  and catalogue coverage for both; with ``--models als-explicit`` (the same snapshot in explicit
  mode) test RMSE vs the bias baseline (global mean + user and item biases; target < 1×);
- fraud AUPRC (target ≥ 0.7 and ≥ 10× the test positive rate), the imbalance handling and family
  chosen on validation (validation AUPRC of each pair), and the test Brier score before and after
  calibration (target: not worse after);
- RUL RMSE vs the mean-RUL-by-age baseline (target ≤ 0.6×);
- training seconds per model, and ALS seconds per iteration on a synthetic ≥ 5 M-interaction table
  (fit with 1 and with 6 iterations; per iteration = difference ÷ 5).

The data settings (chargebacks land within 46 days, so the label window is 46 days; 3-day validation
and test) come from conf/local.yaml, the same as ``scripts/run-local``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F

from lakeml import runlog
from lakeml.config import load_config
from lakeml.domains.banking.fraud_model import train_fraud_model
from lakeml.domains.commerce.recommender import train_recommender
from lakeml.domains.maintenance.failure_model import train_failure_models
from lakeml.ml import models
from lakeml.session import build_spark

LAKEML = str(Path(sys.executable).with_name("lakeml"))
MAINTENANCE_DAYS = 14


def _run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([LAKEML, *args, "--env", "local"], check=True)
    return time.perf_counter() - started


DOMAIN_OF = {"fraud": "banking", "failure": "maintenance", "als": "commerce", "als-explicit": "commerce"}
# Extra --conf of a bench model that is another mode of a trainer.
MODEL_CONF = {
    "als-explicit": ["ml.recommender.mode=explicit", "ml.recommender.model_name=lakeml-recommender-explicit"]
}


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
        if f"{domain} features" in seconds:  # two bench models of one domain
            continue
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
    print(f"           chosen on validation: imbalance {fraud['imbalance']} (positive weight {fraud['positive_weight']:g}) "
          f"+ {fraud['family']}; split {fraud['split']}; validation AUPRC by imbalance and family "
          f"{fraud['validation_auprc_by_imbalance']}", flush=True)  # fmt: skip
    print(f"           Brier score on test {fraud['brier_raw']:.6f} before, {fraud['brier_calibrated']:.6f} after "
          f"calibration ({fraud['calibration']}, fitted on validation)", flush=True)  # fmt: skip
    ratio = fraud["auprc"] / max(fraud["positive_rate"], 1e-12)
    brier = fraud["brier_calibrated"] / max(fraud["brier_raw"], 1e-12)
    return [("fraud AUPRC", fraud["auprc"], ">= 0.7", fraud["auprc"] >= 0.7),
            ("fraud AUPRC ÷ positive rate", ratio, ">= 10", ratio >= 10),
            ("fraud Brier calibrated ÷ raw", brier, "<= 1", brier <= 1)]  # fmt: skip


def report_failure(failure: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  failure  RUL RMSE {failure['rmse']:.2f} (baseline {failure['baseline_rmse']:.2f}), failure AUPRC "
          f"{failure['auprc']:.4f}, train rows {failure['rows_train']:,}", flush=True)  # fmt: skip
    ratio = failure["rmse"] / failure["baseline_rmse"]
    return [("RUL RMSE ÷ baseline", ratio, "<= 0.6", ratio <= 0.6)]


def report_als(als: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  als      precision@10 {als['precision_at_k']:.4f} (popularity {als['baseline_precision_at_k']:.4f}), "
          f"pairs {als['rows_train'] + als['rows_validation'] + als['rows_test']:,}", flush=True)  # fmt: skip
    for k, by in als["by_k"].items():
        print(f"           @{k:<3} precision {by['als']['precision_at_k']:.4f} (popularity {by['popularity']['precision_at_k']:.4f}), "
              f"NDCG {by['als']['ndcg_at_k']:.4f} (popularity {by['popularity']['ndcg_at_k']:.4f})", flush=True)  # fmt: skip
    print(
        f"           catalogue coverage {als['coverage']:.4f} (popularity {als['baseline_coverage']:.4f})",
        flush=True,
    )
    ratio = als["precision_at_k"] / max(als["baseline_precision_at_k"], 1e-12)
    if als["mode"] == "explicit":
        print(f"           explicit: test RMSE {als['rmse']:.4f} vs bias baseline {als['bias_baseline_rmse']:.4f} "
              f"(regularisation {als['bias_regularization']:g}; ALS on residuals: {als['explicit_residuals']})",
              flush=True)  # fmt: skip
        rmse = als["rmse"] / als["bias_baseline_rmse"]
        return [("ALS explicit RMSE ÷ bias baseline", rmse, "< 1", rmse < 1)]
    return [("ALS precision@10 ÷ popularity", ratio, ">= 2", ratio >= 2)]


MODELS = {
    "fraud": (train_fraud_model, report_fraud),
    "failure": (train_failure_models, report_failure),
    "als": (train_recommender, report_als),
    "als-explicit": (train_recommender, report_als),
}


def train_recorded(train, spark, config, end):  # type: ignore[no-untyped-def]
    """Run a trainer with the tuning records kept; (records, summary, seconds)."""
    models.FIT_RECORDS = []
    started = time.perf_counter()
    try:
        result = train(spark, config, end)
        return models.FIT_RECORDS, result, time.perf_counter() - started
    finally:
        models.FIT_RECORDS = None


def bare_fit_seconds(record: models.FitRecord) -> float:
    """A plain ``fit`` of the record's estimator (winning params) on its training rows, cached first."""
    data = record.data.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        data.count()
        started = time.perf_counter()
        record.estimator.fit(data)
        return time.perf_counter() - started
    finally:
        data.unpersist()


def winners(name: str, config, result: dict, records: Sequence[models.FitRecord]) -> list[models.FitRecord]:  # type: ignore[no-untyped-def]
    """The records of the models the trainer kept (the winning family of each model)."""
    if name == "fraud":
        wanted = {f"{config.ml.fraud.model_name}@{result['imbalance']}/{result['family']}"}
    elif name == "failure":
        cfg = config.ml.failure
        wanted = {
            f"{cfg.rul_model_name}/{result['rul_family']}",
            f"{cfg.failure_model_name}/{result['failure_family']}",
        }
    else:
        wanted = {config.ml.recommender.model_name}
    return [r for r in records if r.name in wanted]


def one_point_overrides(name: str, config, result: dict, records: Sequence[models.FitRecord]) -> list[str]:  # type: ignore[no-untyped-def]
    """--conf overrides that leave only the winner's family and grid point of each model."""

    def grid(record: models.FitRecord) -> dict[str, list[float]]:
        return {k: [float(v)] for k, v in record.params.items()}

    kept = winners(name, config, result, records)
    if name == "fraud":
        return [
            f"ml.fraud.families={json.dumps({result['family']: grid(kept[0])})}",
            f"ml.fraud.imbalance={json.dumps([result['imbalance']])}",
        ]
    if name in ("als", "als-explicit"):
        return [f"ml.recommender.grid={json.dumps(grid(kept[0]))}"]
    cfg, out, families = config.ml.failure, [], {}
    for record in kept:
        task = "rul" if record.name.startswith(cfg.rul_model_name + "/") else "failure"
        family = record.name.rsplit("/", 1)[1]
        if family == "gbt":
            out.append(f"ml.failure.{task}_grid={json.dumps(grid(record))}")
        else:  # one grid for both models: the union of their points
            merged = families.setdefault(family, {})
            for k, v in grid(record).items():
                merged[k] = sorted({*merged.get(k, []), *v})
    return [*out, f"ml.failure.families={json.dumps(families)}"]


def report_tuning(
    name: str, records: Sequence[models.FitRecord], parallelism: int
) -> list[tuple[str, float, str, bool]]:
    """Per tuning: wall seconds vs the sum of its fits ÷ parallelism (a one-point grid has nothing to check)."""
    checks = []
    for r in records:
        ideal = sum(r.grid_seconds) / max(1, r.parallelism)
        print(f"    tuning {r.name:<28} {len(r.grid_seconds)} point(s), wall {r.wall_seconds:7.1f} s, fits "
              f"{', '.join(f'{s:.1f}' for s in r.grid_seconds)} s, sum ÷ {r.parallelism} = {ideal:.1f} s, "
              f"winner {r.params}", flush=True)  # fmt: skip
        if len(r.grid_seconds) > 1:
            ratio = r.wall_seconds / ideal
            checks.append((f"{r.name} grid wall ÷ (fits ÷ par.)", ratio, "<= 1.3", ratio <= 1.3))
    return checks


def report_families(name: str, result: dict, records: Sequence[models.FitRecord]) -> None:
    """Validation quality and tuning seconds of each family, side by side."""
    seconds = {r.name: r.wall_seconds for r in records}
    for key in ("validation_auprc_by_family", "validation_rmse_by_family"):
        for family, metric in result.get(key, {}).items():
            spent = {n: s for n, s in seconds.items() if n.endswith("/" + family)}
            if key.endswith("rmse_by_family"):
                spent = {n: s for n, s in spent.items() if "rul" in n}
            elif name == "failure":
                spent = {n: s for n, s in spent.items() if "rul" not in n}
            print(f"    family {family:<9} {key.split('_')[1]} {metric:.4f} on validation, tuning "
                  f"{sum(spent.values()):.1f} s", flush=True)  # fmt: skip


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
    parser.add_argument(
        "--phases",
        default="default,one",
        help="default: train with the conf grids; one: retrain with the winner's one-point grid and time a bare fit",
    )
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
    runlog.configure(config.run.log_format)  # the trainers' progress lines (fit_done, family_done)
    spark = build_spark(config, app_name="bench-models")
    checks: list[tuple[str, float, str, bool]] = []
    phases = args.phases.split(",")
    for name in names:
        train, report = MODELS[name]
        model_conf = [*args.conf, *MODEL_CONF.get(name, [])]
        config = load_config("local", model_conf)
        records, result, seconds = train_recorded(train, spark, config, end)
        checks += report(result)
        print(f"  training seconds {name:<15} {seconds:8.1f}   (default grid)", flush=True)
        checks += report_tuning(name, records, config.ml.parallelism)
        report_families(name, result, records)
        if "one" in phases:
            overrides = one_point_overrides(name, config, result, records)
            one_config = load_config("local", [*model_conf, *overrides])
            one_records, one_result, one_seconds = train_recorded(train, spark, one_config, end)
            report(one_result)
            bare = sum(bare_fit_seconds(r) for r in winners(name, one_config, one_result, one_records))
            ratio = one_seconds / bare
            print(f"  training seconds {name:<15} {one_seconds:8.1f}   (one-point grid {overrides}); bare fit of "
                  f"the winner(s) on the same cached rows {bare:.1f} s", flush=True)  # fmt: skip
            checks.append((f"{name} training ÷ bare fit (1 point)", ratio, "<= 1.5", ratio <= 1.5))
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
