"""Nearline fraud-alert benchmark: a feeder lands many small transaction files at a steady rate while
``banking.fraud_alerts`` runs; prints sustained throughput, arrival → alert-committed latency
p50/p95/p99, the micro-batch breakdown (read+state, features, model, commit, sink), and driver
memory and state size at the start and the end.

Ratios are against the feed rate and the issue's targets, both fixed in this run (there is no
older nearline path to compare with):

    .venv/bin/python scripts/bench_nearline.py --minutes 3 --rate 500 --file-rows 50
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

TARGET_P99_S = 5.0
TARGET_RATE = 500.0


def luhn_pan(card: int) -> str:
    body = f"4{card:014d}"
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def feeder(
    folder: Path, rate: float, file_rows: int, cards: int, stop: threading.Event, written: list[int]
) -> None:
    """Write ``file_rows``-line files so that ``rate`` transactions/s land, event time = now."""
    from lakeml.domains.banking.silver import TRANSACTION_FIELDS

    rng = random.Random(7)
    pans = [luhn_pan(c) for c in range(cards)]
    header = ",".join(TRANSACTION_FIELDS)
    interval = file_rows / rate
    n, next_at = 0, time.monotonic()
    while not stop.is_set():
        now = dt.datetime.now(dt.UTC)
        lines = [header]
        for _ in range(file_rows):
            c = rng.randrange(cards)
            lines.append(
                f"x{n:09d},{now:%Y-%m-%dT%H:%M:%S.%f}Z,{pans[c]},A{c},M{rng.randrange(500)},5411,"
                f"{rng.uniform(1, 400):.2f},EUR,pos,DE,52.5,13.4,true"
            )
            n += 1
        tmp = folder / f".f{n:09d}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(folder / f"f{n:09d}.csv")  # atomic: the stream never sees half a file
        written.append(file_rows)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def register_model(spark, config) -> None:  # type: ignore[no-untyped-def]
    """A small logistic champion on synthetic features (the benchmark measures serving, not the model)."""
    import mlflow
    import mlflow.spark
    from pyspark.ml import Pipeline
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lakeml.domains.banking.features import TRANSACTION_FEATURES_SCHEMA
    from lakeml.ml import models, registry, tracking

    cfg = config.ml.fraud
    types = {f.name: f.dataType for f in TRANSACTION_FEATURES_SCHEMA.fields}
    numeric = [
        ((F.rand(i) < 0.5) if isinstance(types[c], T.BooleanType) else (F.rand(i) * 10).cast(types[c])).alias(
            c
        )
        for i, c in enumerate(cfg.numeric_features)
    ]
    categorical = [F.lit("pos" if c == "channel" else "5411").alias(c) for c in cfg.categorical_features]
    df = (
        spark.range(2000)
        .select(*numeric, *categorical)
        .withColumn("_label", (F.rand(99) < 0.05).cast("double"))
    )
    stages = [
        *models.feature_stages(df.schema, cfg.numeric_features, cfg.categorical_features),
        *models.classifier_stages("logistic", "_label", None, 1),
    ]
    model = Pipeline(stages=stages).fit(df)
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    mlflow.set_experiment(experiment_id=tracking.experiment_id(config, "bench-nearline"))
    with mlflow.start_run():
        info = mlflow.spark.log_model(
            model, artifact_path="m", pip_requirements=[f"pyspark=={spark.version}"]
        )
    version = mlflow.register_model(info.model_uri, cfg.model_name).version
    client = mlflow.MlflowClient()
    client.set_model_version_tag(cfg.model_name, version, "threshold", "0.9")
    client.set_registered_model_alias(cfg.model_name, registry.CHAMPION, version)


def snapshot(spark, query) -> dict[str, float]:  # type: ignore[no-untyped-def]
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    rss_kb = next(
        int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS")
    )
    progress = query.lastProgress or {}
    state = (progress.get("stateOperators") or [{}])[0]
    return {
        "jvm_heap_used_mb": (runtime.totalMemory() - runtime.freeMemory()) / 2**20,
        "python_rss_mb": rss_kb / 1024,
        "state_rows": state.get("numRowsTotal", 0),
        "state_mb": state.get("memoryUsedBytes", 0) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="transactions per second fed")
    parser.add_argument("--file-rows", type=int, default=50, help="transactions per landing file")
    parser.add_argument("--cards", type=int, default=5000)
    parser.add_argument("--root", help="lakehouse folder (default: a fresh temporary one)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-nearline-"))
    os.environ.setdefault("LAKEML_PII_KEY", "bench-nearline-only-pii-key-0123456789")

    from pyspark.sql import functions as F

    from lakeml.config import load_config
    from lakeml.domains.banking.nearline import start_fraud_alerts
    from lakeml.lakehouse import Lakehouse
    from lakeml.session import build_spark

    config = load_config(
        "local",
        [f"lakehouse.root={root}", "lakehouse.engine=delta-rs", "spark.conf.spark.sql.shuffle.partitions=2",
         "nearline.fraud_alerts.trigger_seconds=1"],
    )  # fmt: skip
    spark = build_spark(config)
    landing = root / "landing" / "transactions"
    landing.mkdir(parents=True)
    register_model(spark, config)
    query, handler = start_fraud_alerts(spark, config)
    stop, written = threading.Event(), []
    feed = threading.Thread(
        target=feeder, args=(landing, args.rate, args.file_rows, args.cards, stop, written)
    )
    started = time.time()
    feed.start()
    time.sleep(30)  # first micro-batches (JIT, Python workers, model load): reported apart from steady state
    warm = len(handler.metrics)
    first = snapshot(spark, query)
    time.sleep(max(0.0, args.minutes * 60 - 30))
    last = snapshot(spark, query)
    stop.set()
    feed.join()
    fed_seconds = time.time() - started
    # Up to a minute to drain what landed; what is left then is reported as the backlog.
    deadline = time.time() + 60
    while time.time() < deadline and query.status["isDataAvailable"]:
        time.sleep(1)
    query.stop()

    steady = handler.metrics[warm:]
    committed = spark.createDataFrame(
        [(m.batch_id, m.committed_at) for m in handler.metrics], "b long, c double"
    )
    rows = Lakehouse(spark, config).table("gold", "fraud_alerts").read()
    latency = rows.join(committed, rows.stream_batch_id == committed.b).select(
        (F.col("c") - F.unix_micros("arrived_at") / 1e6).alias("s"), "stream_batch_id"
    )
    steady_ids = [m.batch_id for m in steady]
    q = (
        latency.where(F.col("stream_batch_id").isin(steady_ids))
        .agg(F.percentile_approx("s", [0.5, 0.95, 0.99], 10000).alias("p"), F.count("*").alias("n"))
        .first()
    )
    span = steady[-1].committed_at - steady[0].committed_at if len(steady) > 1 else float("nan")
    scored = sum(m.counts.get("scored", 0) for m in steady[1:])
    throughput = scored / span if span else float("nan")
    print(f"fed {sum(written)} transactions in {len(written)} files over {fed_seconds:.0f} s "
          f"(target rate {args.rate:.0f}/s, {args.file_rows} per file); {len(handler.metrics)} micro-batches, "
          f"{warm} in the 30 s warm-up")  # fmt: skip
    done = sum(sum(m.counts.values()) for m in handler.metrics)
    print(f"backlog at the end: {sum(written) - done} of {sum(written)} transactions fed were not processed")
    print(
        f"sustained throughput (steady batches): {throughput:.0f} txn/s = {throughput / args.rate:.2f}x the feed rate"
    )
    p50, p95, p99 = q["p"] if q["p"] else (float("nan"),) * 3
    print(f"arrival -> alert committed latency over {q['n']} transactions: p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"p99 {p99:.2f} s = {p99 / TARGET_P99_S:.2f}x the {TARGET_P99_S:g} s target")  # fmt: skip
    phases = sorted({k for m in steady for k in m.seconds})
    print("micro-batch seconds, mean (max): " + ", ".join(
        f"{k} {statistics.mean(m.seconds.get(k, 0) for m in steady):.2f} ({max(m.seconds.get(k, 0) for m in steady):.2f})"
        for k in phases))  # fmt: skip
    print(f"rows per micro-batch: mean {statistics.mean(sum(m.counts.values()) for m in steady):.0f}")
    for name, s in (("start (after warm-up)", first), ("end", last)):
        print(f"{name}: driver JVM heap used {s['jvm_heap_used_mb']:.0f} MB, driver Python RSS "
              f"{s['python_rss_mb']:.0f} MB, state {s['state_rows']} cards / {s['state_mb']:.1f} MB")  # fmt: skip
    print(f"lakehouse: {root}")
    spark.stop()


if __name__ == "__main__":
    main()
