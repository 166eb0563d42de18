"""Benchmark the models on generated data: quality against the targets and against the behaviour
before #28, and training time against a bare fit.

    .venv/bin/python scripts/bench_models.py [--quick] [--scale 10] [--days 70] [--workdir DIR]
        [--reuse | --no-generate] [--models fraud,failure,als,als-explicit] [--conf KEY=VALUE ...]
        [--phases default,before,one[,cross]] [--als-interactions 5000000]

``--quick`` = scale 1 and a 1 M-interaction ALS timing (the whole bench in minutes on a quiet
machine; the full run is scale 10). Generates ``--days`` of landing data at ``--scale`` (``lakeml
generate``), runs bronze → silver → gold through the real jobs (banking features for every day,
machine features for the last 14 days, the commerce snapshot of the last day; 70 days = 46-day label
window + 3 test + 3 validation + 18 train), then trains each model in one session and prints each
result as soon as it is known:

- ALS precision@10 vs the popularity baseline (target ≥ 2×), NDCG and precision at every k of ``ks``
  and catalogue coverage for both; ``als-explicit`` (the same snapshot in explicit mode): test RMSE
  vs the bias baseline (global mean + user and item biases; target < 1×);
- fraud AUPRC (target ≥ 0.7 and ≥ 10× the test positive rate), the imbalance handling and family
  chosen on validation (validation AUPRC and tuning seconds of each pair fitted: MLlib's families
  beside xgboost.spark's), and the test Brier score before and after calibration;
- RUL RMSE vs the mean-RUL-by-age baseline (target ≤ 0.6×);
- phase ``before``: fraud and explicit ALS retrained on the same lake with the conf of the behaviour
  before #28 (``BEFORE_CONF``: fixed ``positive_weight_divisor`` weighting, no imbalance search, no
  calibration; plain explicit ALS without the bias residuals); a table prints every figure before
  and now with its target, ok/MISS against the target and ok/WORSE against before. The training
  seconds of both are comparable: one untimed warm-up training (the before conf, its own model name)
  runs first, so neither timed run pays the session's first fit (JIT, class loading, first reads),
  and both timed runs use model names new to this bench run (no champion to evaluate in either);
- issue #23: per trainer, wall time with the default grid ÷ (sum of its grid fits ÷ ``ml.parallelism``)
  (target ≤ 1.3), each multi-point tuning's wall ÷ (its fits ÷ its parallelism), and with phase
  ``one`` the training seconds with the winner's one-point grid ÷ a bare MLlib fit of the winning
  estimator with the winning params on the same cached rows (target ≤ 1.5);
- phase ``cross`` (fraud, not default): every family under every imbalance option, the search the
  imbalance screen (``ml.fraud.imbalance_families``) replaces: its seconds and choice beside the default;
- training seconds per model, and ALS seconds per iteration on a synthetic ≥ 5 M-interaction table
  (fit with 1 and with 6 iterations; per iteration = difference ÷ 5).

``--reuse`` trains in ``--workdir``'s lake as it is: the runs write MLflow runs, registry versions,
reports and checkpoints into it, so copy a lake that must stay unchanged (``cp -r``) and reuse the copy.

The data settings (chargebacks land within 46 days, so the label window is 46 days; 3-day validation
and test) come from conf/local.yaml, the same as ``scripts/run-local``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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
from lakeml.steps import DateRange

LAKEML = str(Path(sys.executable).with_name("lakeml"))
MAINTENANCE_DAYS = 14


def _run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([LAKEML, *args, "--env", "local"], check=True)
    return time.perf_counter() - started


DOMAIN_OF = {"fraud": "banking", "failure": "maintenance", "als": "commerce", "als-explicit": "commerce"}
# Extra --conf of a bench model that is another mode of a trainer.
MODEL_CONF = {
    "als-explicit": ["ml.recommender.mode=explicit", "ml.recommender.model_name=lakeml-recommender-explicit"],
    # MLlib GBT is off in the failure defaults (xgboost won): here both compete, side by side.
    "failure": ["ml.failure.include_gbt=true"],
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
    """ALS implicit fit time with 1 and 6 iterations on a synthetic table; returns (per iteration,
    6-iteration fit)."""
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
    print(f"  fraud    AUPRC {fraud['auprc']:.4f} ({fraud['family']}; baseline "
          f"{fraud['baseline_auprc']:.4f}), positive "
          f"rate {fraud['positive_rate']:.4%}, ROC AUC {fraud['roc_auc']:.4f}, precision/recall at the alert "
          "budget "
          f"{fraud['precision_at_budget']:.3f}/{fraud['recall_at_budget']:.3f}, train rows "
          f"{fraud['rows_train']:,}, test rows {fraud['rows_test']:,}", flush=True)  # fmt: skip
    print(f"           chosen on validation: imbalance {fraud['imbalance']} (positive weight "
          f"{fraud['positive_weight']:g}) "
          f"+ {fraud['family']}; split {fraud['split']}; validation AUPRC by imbalance and family "
          f"{fraud['validation_auprc_by_imbalance']}", flush=True)  # fmt: skip
    print(f"           Brier score on test {fraud['brier_raw']:.6f} before, {fraud['brier_calibrated']:.6f} "
          "after "
          f"calibration ({fraud['calibration']}, fitted on validation)", flush=True)  # fmt: skip
    ratio = fraud["auprc"] / max(fraud["positive_rate"], 1e-12)
    brier = fraud["brier_calibrated"] / max(fraud["brier_raw"], 1e-12)
    return [("fraud AUPRC", fraud["auprc"], ">= 0.7", fraud["auprc"] >= 0.7),
            ("fraud AUPRC ÷ positive rate", ratio, ">= 10", ratio >= 10),
            ("fraud Brier calibrated ÷ raw", brier, "<= 1", brier <= 1)]  # fmt: skip


def report_failure(failure: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  failure  RUL RMSE {failure['rmse']:.2f} (baseline {failure['baseline_rmse']:.2f}), failure "
          "AUPRC "
          f"{failure['auprc']:.4f}, train rows {failure['rows_train']:,}", flush=True)  # fmt: skip
    ratio = failure["rmse"] / failure["baseline_rmse"]
    return [("RUL RMSE ÷ baseline", ratio, "<= 0.6", ratio <= 0.6)]


def report_als(als: dict) -> list[tuple[str, float, str, bool]]:
    print(f"  als      precision@10 {als['precision_at_k']:.4f} (popularity "
          f"{als['baseline_precision_at_k']:.4f}), "
          f"pairs {als['rows_train'] + als['rows_validation'] + als['rows_test']:,}", flush=True)  # fmt: skip
    for k, by in als["by_k"].items():
        print(f"           @{k:<3} precision {by['als']['precision_at_k']:.4f} (popularity "
              f"{by['popularity']['precision_at_k']:.4f}), "
              f"NDCG {by['als']['ndcg_at_k']:.4f} (popularity "
              f"{by['popularity']['ndcg_at_k']:.4f})", flush=True)  # fmt: skip
    print(
        f"           catalogue coverage {als['coverage']:.4f} (popularity {als['baseline_coverage']:.4f})",
        flush=True,
    )
    ratio = als["precision_at_k"] / max(als["baseline_precision_at_k"], 1e-12)
    if als["mode"] == "explicit":
        print(f"           explicit: test RMSE {als['rmse']:.4f} vs bias baseline "
              f"{als['bias_baseline_rmse']:.4f} "
              f"(regularisation {als['bias_regularization']:g}; ALS on residuals: "
              f"{als['explicit_residuals']})",
              flush=True)  # fmt: skip
        checks = []
        if "explicit_model" in als:  # the candidates compared on validation (same pairs)
            how = ("validation RMSE" if als.get("explicit_choice_metric", "rmse") == "rmse"
                   else "validation NDCG@k among those no worse than the bias baseline in validation RMSE")
            print(f"           chosen on {how}: {als.get('explicit_choice', als['explicit_model'])} "
                  f"(validation RMSE {als['validation_rmse']:.4f} vs bias "
                  f"baseline {als['bias_validation_rmse']:.4f}); validation RMSE by candidate "
                  f"{als['validation_rmse_by_candidate']}; validation NDCG@k by candidate ranked "
                  f"{als.get('validation_ndcg_by_candidate', {})}, validation coverage by candidate "
                  f"{als.get('validation_coverage_by_candidate', {})}",
                  flush=True)  # fmt: skip
            ratio = als["validation_rmse"] / als["bias_validation_rmse"]
            checks.append(("ALS explicit validation RMSE ÷ bias baseline", ratio, "<= 1", ratio <= 1))
        rmse = als["rmse"] / als["bias_baseline_rmse"]
        return [*checks, ("ALS explicit RMSE ÷ bias baseline", rmse, "< 1", rmse < 1)]
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
        result = train(spark, config, DateRange.single(end)).details
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
    if name == "als-explicit" and "explicit_one_point" in result:
        # the winner's conf as the trainer reports it: its grid point unscaled (the trainer scales the
        # residual regParam by the residuals' std x factor; the fitted params are already scaled)
        return [f"ml.recommender.{k}={json.dumps(v)}" for k, v in result["explicit_one_point"].items()]
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
    gbt = "true" if out else "false"
    return [*out, f"ml.failure.include_gbt={gbt}", f"ml.failure.families={json.dumps(families)}"]


def report_tuning(
    name: str, records: Sequence[models.FitRecord], parallelism: int
) -> list[tuple[str, float, str, bool]]:
    """Per tuning: wall seconds vs the sum of its fits ÷ parallelism (a one-point grid has nothing to
    check)."""
    checks = []
    for r in records:
        ideal = sum(r.grid_seconds) / max(1, r.parallelism)
        print(f"    tuning {r.name:<28} {len(r.grid_seconds)} point(s), wall {r.wall_seconds:7.1f} s, fits "
              f"{', '.join(f'{s:.1f}' for s in r.grid_seconds)} s, sum ÷ {r.parallelism} = {ideal:.1f} s"
              + (f", winner {r.params}" if r.params else ""), flush=True)  # fmt: skip
        if len(r.grid_seconds) > 1:
            ratio = r.wall_seconds / ideal
            checks.append((f"{r.name} grid wall ÷ (fits ÷ par.)", ratio, "<= 1.3", ratio <= 1.3))
    return checks


def report_families(name: str, result: dict, records: Sequence[models.FitRecord]) -> None:
    """Validation quality and tuning seconds of each family (fraud: of each imbalance option and family
    fitted), side by side: MLlib's families beside xgboost.spark's."""
    seconds = {r.name: r.wall_seconds for r in records}
    if name == "fraud":
        for option, by_family in result["validation_auprc_by_imbalance"].items():
            for family, metric in by_family.items():
                spent = sum(s for n, s in seconds.items() if n.endswith(f"@{option}/{family}"))
                print(f"    family {family:<9} imbalance {option:<10} AUPRC {metric:.4f} on validation, "
                      f"tuning {spent:.1f} s", flush=True)  # fmt: skip
        return
    for key in ("validation_auprc_by_family", "validation_rmse_by_family"):
        for family, metric in result.get(key, {}).items():
            spent = {n: s for n, s in seconds.items() if n.endswith("/" + family)}
            if key.endswith("rmse_by_family"):
                spent = {n: s for n, s in spent.items() if "rul" in n}
            elif name == "failure":
                spent = {n: s for n, s in spent.items() if "rul" not in n}
            print(f"    family {family:<9} {key.split('_')[1]} {metric:.4f} on validation, tuning "
                  f"{sum(spent.values()):.1f} s", flush=True)  # fmt: skip


def report_trainer_overhead(
    name: str, seconds: float, records: Sequence[models.FitRecord], parallelism: int
) -> tuple[str, float, str, bool]:
    """Issue #23 with the default grid: the trainer's wall time ÷ (sum of every grid fit ÷ ml.parallelism)."""
    fits = [s for r in records for s in r.grid_seconds]
    ideal = sum(fits) / max(1, parallelism)
    ratio = seconds / ideal if ideal else math.inf
    print(f"  {name}: training wall {seconds:.1f} s ÷ (sum of its {len(fits)} fits {sum(fits):.1f} s ÷ "
          f"ml.parallelism {parallelism}) = {ratio:.2f}", flush=True)  # fmt: skip
    return (f"{name} wall ÷ (fits ÷ parallelism)", ratio, "<= 1.3", ratio <= 1.3)


# Issue #28, "no figure bench_models prints today may get worse": the conf that gives the trainers'
# behaviour before #28, trained on the same lake in the same run (own model names: no champion shared).
BEFORE_CONF = {
    "fraud": [  # fixed positive_weight_divisor weighting, no imbalance search, no calibration
        "ml.fraud.imbalance=[divisor]",
        "ml.fraud.calibration=none",
        "ml.fraud.model_name=lakeml-fraud-before",
    ],
    "als-explicit": [  # plain ALS on the ratings (no bias baseline inside the model)
        "ml.recommender.explicit_residuals=false",
        "ml.recommender.model_name=lakeml-recommender-explicit-before",
    ],
}

# The conf key of each model's name in BEFORE_CONF's models: the timed now/before runs get a suffix new
# to the bench run (no champion of an earlier run to evaluate), the warm-up its own name.
MODEL_NAME_KEY = {"fraud": "ml.fraud.model_name", "als-explicit": "ml.recommender.model_name"}


def renamed(overrides: Sequence[str], key: str, suffix: str) -> list[str]:
    """``overrides`` with the last ``key=name`` (the model's name) given ``suffix``."""
    names = [o for o in overrides if o.startswith(key + "=")]
    return [*overrides, f"{names[-1]}{suffix}"] if names else list(overrides)


def describe_lake(lake: Path) -> str:
    """What a reused lake holds (its gold tables), for the header: --scale and --days do not apply to it."""
    gold = sorted(p.name for p in (lake / "gold").iterdir() if p.is_dir()) if (lake / "gold").is_dir() else []
    return (f"reused lake {lake} (built earlier; --scale/--days not applied), gold tables: "
        f"{', '.join(gold) or 'none'}")


# The fraud search before the imbalance screen: every family refitted under every imbalance option.
CROSS_CONF = ["ml.fraud.imbalance_families=0", "ml.fraud.model_name=lakeml-fraud-cross"]

Figure = tuple[str, Callable[[dict], float], int, str, Callable[[float], bool] | None]
# Per model: (figure, value from the trainer's summary, +1 higher is better / -1 lower, target, check).
FIGURES: dict[str, list[Figure]] = {
    "fraud": [
        ("test AUPRC", lambda r: r["auprc"], 1, ">= 0.7", lambda v: v >= 0.7),
        ("AUPRC ÷ positive rate", lambda r: r["auprc"] / max(r["positive_rate"], 1e-12), 1, ">= 10",
         lambda v: v >= 10),
        ("ROC AUC", lambda r: r["roc_auc"], 1, "", None),
        ("precision at alert budget", lambda r: r["precision_at_budget"], 1, "", None),
        ("recall at alert budget", lambda r: r["recall_at_budget"], 1, "", None),
        ("Brier score of the served score", lambda r: r["brier_calibrated"], -1, "", None),
    ],
    "failure": [
        ("RUL RMSE ÷ baseline", lambda r: r["rmse"] / r["baseline_rmse"], -1, "<= 0.6", lambda v: v <= 0.6),
        ("failure test AUPRC", lambda r: r["auprc"], 1, "", None),
    ],
    "als": [
        ("precision@k ÷ popularity", lambda r: r["precision_at_k"] / max(r["baseline_precision_at_k"], 1e-12),
         1, ">= 2", lambda v: v >= 2),
        ("precision@k", lambda r: r["precision_at_k"], 1, "", None),
        ("NDCG@k", lambda r: r["ndcg_at_k"], 1, "", None),
        ("catalogue coverage", lambda r: r["coverage"], 1, "", None),
    ],
    "als-explicit": [
        ("test RMSE ÷ bias "
         "baseline", lambda r: r["rmse"] / r["bias_baseline_rmse"], -1, "< 1", lambda v: v < 1),
        ("test RMSE", lambda r: r["rmse"], -1, "", None),
        ("precision@k", lambda r: r["precision_at_k"], 1, "", None),
        ("NDCG@k", lambda r: r["ndcg_at_k"], 1, "", None),
        ("catalogue coverage", lambda r: r["coverage"], 1, "", None),
    ],
}  # fmt: skip


def print_before_after(runs: dict[str, dict[str, tuple[dict, float]]]) -> None:
    """Per model and figure: before #28 (BEFORE_CONF) | now (default conf) | target, ok/MISS against the
    target and ok/WORSE against before (training seconds included)."""
    print("\n  before/after #28 on the same lake (before: the conf of BEFORE_CONF; now: the default conf; "
          "training seconds: both timed after one untimed warm-up training in this session)")  # fmt: skip
    print(f"  {'model':<13}{'figure':<34}{'before':>10}{'now':>10}  {'target':<7}{'target?':<9}{'vs before'}")
    for name, phases in runs.items():
        now, now_seconds = phases["default"]
        before = phases.get("before")
        figures = [*FIGURES[name], ("training seconds", lambda _: math.nan, -1, "", None)]
        for label, value, sign, target, check in figures:
            after_v = now_seconds if label == "training seconds" else value(now)
            if before is None:
                before_v, versus = math.nan, "— (no #28 switch)"
            else:
                before_v = before[1] if label == "training seconds" else value(before[0])
                versus = "WORSE" if sign * (after_v - before_v) < 0 else "ok"
            meets = "" if check is None else ("ok" if check(after_v) else "MISS")
            print(f"  {name:<13}{label:<34}{before_v:>10.4g}{after_v:>10.4g}  {target:<7}{meets:<9}{versus}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, help="default 10 (--quick: 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scale 1 and a 1 M-interaction ALS timing unless given: the whole bench in minutes",
    )
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--end-date", default="2026-03-31")
    parser.add_argument("--workdir", help="keep the lakehouse here (default: a temporary folder)")
    parser.add_argument(
        "--reuse", action="store_true", help="skip generation and gold builds (workdir must hold them)"
    )
    parser.add_argument(
        "--no-generate", action="store_true", help="reuse the workdir's landing files, build the gold tables"
    )
    parser.add_argument(
        "--models", default="fraud,failure,als,als-explicit", help="comma-separated subset to train"
    )
    parser.add_argument("--conf", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--als-interactions", type=int, help="default 5 M (--quick: 1 M); 0 skips the timing")
    parser.add_argument(
        "--phases",
        default="default,before,one",
        help="default: train with the conf grids; before: retrain with BEFORE_CONF (the behaviour before "
        "#28) and compare; cross: fraud with every family under every imbalance option (the cost the "
        "screen saves); one: retrain with the winner's one-point grid and time a bare fit",
    )
    args = parser.parse_args()
    bench_started = time.perf_counter()
    if args.scale is None:
        args.scale = 1 if args.quick else 10
    if args.als_interactions is None:
        args.als_interactions = 1_000_000 if args.quick else 5_000_000
    end = dt.date.fromisoformat(args.end_date)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lakeml-bench-models-"))
    os.environ["LAKEML_LAKEHOUSE"] = str(workdir / "lake")
    os.environ.setdefault("LAKEML_PII_KEY", pii_key(workdir))
    names = args.models.split(",")
    what = (
        describe_lake(workdir / "lake")
        if args.reuse
        else f"scale {args.scale}, {args.days} days ending {end}, lakehouse {workdir / 'lake'}"
    )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"bench_models: {what}, run date {end}, load average {load}"
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
    runs: dict[str, dict[str, tuple[dict, float]]] = {}
    tag = f"-bench{time.strftime('%Y%m%d%H%M%S')}"
    for name in names:
        train, report = MODELS[name]
        model_conf = [*args.conf, *MODEL_CONF.get(name, [])]
        compared = "before" in phases and name in BEFORE_CONF
        if compared:  # a default model name in the conf, so that renamed() can suffix it
            key = MODEL_NAME_KEY[name]
            base_name = getattr(load_config("local", model_conf).ml, key.split(".")[1]).model_name
            model_conf = [*model_conf, f"{key}={base_name}"]
            warm_conf = renamed([*model_conf, *BEFORE_CONF[name]], key, f"-warmup{tag}")
            _, _, warm_seconds = train_recorded(train, spark, load_config("local", warm_conf), end)
            print(f"  warm-up  {name}: one untimed training with the before conf ({warm_seconds:.1f} s), so "
                  "that the timed runs below are both warm", flush=True)  # fmt: skip
            model_conf = renamed(model_conf, key, tag)
        config = load_config("local", model_conf)
        records, result, seconds = train_recorded(train, spark, config, end)
        runs[name] = {"default": (result, seconds)}
        checks += report(result)
        print(f"  training seconds {name:<15} {seconds:8.1f}   (default grid)", flush=True)
        checks += report_tuning(name, records, config.ml.parallelism)
        checks.append(report_trainer_overhead(name, seconds, records, config.ml.parallelism))
        report_families(name, result, records)
        if compared:
            before_conf = renamed([*model_conf, *BEFORE_CONF[name]], MODEL_NAME_KEY[name], tag)
            before_config = load_config("local", before_conf)
            _, before_result, before_seconds = train_recorded(train, spark, before_config, end)
            print(f"  before #28 ({' '.join(BEFORE_CONF[name])}):", flush=True)
            report(before_result)
            print(f"  training seconds {name:<15} {before_seconds:8.1f}   (before #28)", flush=True)
            runs[name]["before"] = (before_result, before_seconds)
            print_before_after({name: runs[name]})
        if "cross" in phases and name == "fraud":  # the cost the imbalance screen saves
            cross_config = load_config("local", [*model_conf, *CROSS_CONF])
            cross_records, cross, cross_seconds = train_recorded(train, spark, cross_config, end)
            fits = sum(len(r.grid_seconds) for r in cross_records)
            print(f"  fraud, every family under every imbalance option ({' '.join(CROSS_CONF)}): {fits} "
                  "fits, "
                  f"{cross_seconds:.1f} s, chose {cross['imbalance']} + {cross['family']} (test AUPRC "
                  f"{cross['auprc']:.4f}); the default conf: {sum(len(r.grid_seconds) for r in records)} "
                  "fits, "
                  f"{seconds:.1f} s, chose {result['imbalance']} + {result['family']} (test AUPRC "
                  f"{result['auprc']:.4f})", flush=True)  # fmt: skip
            ratio = seconds / cross_seconds
            checks.append(("fraud training ÷ full imbalance x family search", ratio, "< 1", ratio < 1))
        if "one" in phases:
            overrides = one_point_overrides(name, config, result, records)
            one_config = load_config("local", [*model_conf, *overrides])
            one_records, one_result, one_seconds = train_recorded(train, spark, one_config, end)
            report(one_result)
            bare = sum(bare_fit_seconds(r) for r in winners(name, one_config, one_result, one_records))
            ratio = one_seconds / bare
            print(f"  training seconds {name:<15} {one_seconds:8.1f}   (one-point grid {overrides}); bare "
                  "fit of "
                  f"the winner(s) on the same cached rows {bare:.1f} s", flush=True)  # fmt: skip
            checks.append((f"{name} training ÷ bare fit (1 point)", ratio, "<= 1.5", ratio <= 1.5))
    if args.als_interactions:
        per_iteration, fit6 = als_seconds_per_iteration(spark, args.als_interactions)
        print(f"  ALS seconds per iteration at {args.als_interactions:,} interactions: {per_iteration:.2f} "
              f"(6-iteration fit {fit6:.1f} s)", flush=True)  # fmt: skip
    spark.stop()
    print_before_after(runs)
    print("\n  targets")
    for name, value, target, ok in checks:
        print(f"  {name:<44} {value:8.3f}   target {target:<6} {'ok' if ok else 'MISS'}")
    print(f"\n  bench_models wall {time.perf_counter() - bench_started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
