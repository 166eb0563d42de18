"""Nearline fraud-alert benchmark: a feeder lands many small transaction files at a steady rate while
``banking.fraud_alerts`` runs; prints the warm-up apart, then for the steady state: sustained
throughput, arrival → alert-committed latency p50/p95/p99, the micro-batch breakdown (our phases and
Spark's query progress), and driver memory and state size at the start and the end (and every
``--sample-seconds`` in between).

Ratios are against the feed rate and the issue's targets (p99 ≤ 5 s at ≥ 500 txn/s, flat memory),
all of this run (there is no older nearline path to compare with):

    .venv/bin/python scripts/bench_nearline.py --minutes 10 --rate 500 --file-rows 50

``--minutes`` is the steady state; the warm-up (``--warmup-seconds``, at least 3 micro-batches) and
the drain come on top.

Memory is judged on what can grow without bound, each at the start and the end of the steady state:
the driver JVM's live heap (heap after GC, from the JVM's own GC log: every collection's "after",
no extra collection during the run, so no pause added to the latency), its committed heap (G1 grows it
towards ``spark.driver.memory`` while the allocation rate needs it; bounded, not a leak), the JVM's
native memory by category (Native Memory Tracking: metaspace, threads, code, direct buffers) and what
NMT does not see (RSS minus NMT's total: RocksDB's and other native libraries' mallocs), the state
store (rows, and bytes on disk) and the whole checkpoint.

``--time-phases`` materializes features and scores apart in each micro-batch
(nearline.fraud_alerts.time_phases: two more Spark jobs per micro-batch) to time them separately.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_P99_S = 5.0
TARGET_RATE = 500.0
MEMORY_GROWTH_FLAT = 1.2  # end / start ratio counted as flat (GC noise)
# The driver JVM logs every collection (heap before -> after (committed), pause) to gc.log in the
# lakehouse folder, and tracks its native memory (NMT summary: a few % of overhead) for jcmd.
GC_LOG_OPTIONS = "-Xlog:gc:file={log}:time -XX:NativeMemoryTracking=summary"
_GC_LINE = re.compile(r"^\[([^\]]+)\] GC\(\d+\) (Pause [A-Za-z]+).*? (\d+)M->(\d+)M\((\d+)M\) ([\d.]+)ms")


def luhn_pan(card: int) -> str:
    body = f"4{card:014d}"
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


class Feeder(threading.Thread):
    """Writes ``file_rows``-line files so that ``rate`` transactions/s land (event time = now)."""

    def __init__(self, folder: Path, rate: float, file_rows: int, cards: int) -> None:
        super().__init__(daemon=True)
        self.folder, self.rate, self.file_rows, self.cards = folder, rate, file_rows, cards
        self.stop = threading.Event()
        self.landed: list[tuple[float, int]] = []  # (epoch seconds, rows) per file

    def fed_until(self, moment: float) -> int:
        return sum(n for t, n in self.landed if t <= moment)

    def run(self) -> None:
        from lakeml.domains.banking.silver import TRANSACTION_FIELDS

        rng = random.Random(7)
        pans = [luhn_pan(c) for c in range(self.cards)]
        header = ",".join(TRANSACTION_FIELDS)
        interval = self.file_rows / self.rate
        n, next_at = 0, time.monotonic()
        while not self.stop.is_set():
            now = dt.datetime.now(dt.UTC)
            lines = [header]
            for _ in range(self.file_rows):
                c = rng.randrange(self.cards)
                lines.append(
                    f"x{n:09d},{now:%Y-%m-%dT%H:%M:%S.%f}Z,{pans[c]},A{c},M{rng.randrange(500)},5411,"
                    f"{rng.uniform(1, 400):.2f},EUR,pos,DE,52.5,13.4,true"
                )
                n += 1
            tmp = self.folder / f".f{n:09d}.tmp"
            tmp.write_text("\n".join(lines) + "\n")
            tmp.rename(self.folder / f"f{n:09d}.csv")  # atomic: the stream never sees half a file
            self.landed.append((time.time(), self.file_rows))
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


def progress_listener(spark, into: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    """Keeps every query progress (Spark's own per-micro-batch durations and state metrics)."""
    from pyspark.sql.streaming import StreamingQueryListener

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:  # type: ignore[no-untyped-def]
            pass

        def onQueryProgress(self, event) -> None:  # type: ignore[no-untyped-def]
            into.append(json.loads(event.progress.json))

        def onQueryIdle(self, event) -> None:  # type: ignore[no-untyped-def]
            pass

        def onQueryTerminated(self, event) -> None:  # type: ignore[no-untyped-def]
            pass

    listener = Listener()
    spark.streams.addListener(listener)
    return listener


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found


def memory(spark, progress: list[dict[str, Any]], checkpoint: Path, gc: bool = False) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Driver JVM heap used (after a full GC when ``gc``) and RSS, Python RSS, state rows / memory / disk."""
    jvm = spark.sparkContext._jvm
    if gc:
        jvm.java.lang.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
    state = next((p["stateOperators"][0] for p in reversed(progress) if p.get("stateOperators")), {})
    state_dir = checkpoint / "query" / "state"
    disk = _folder_bytes(state_dir)
    management = jvm.java.lang.management.ManagementFactory
    pools = management.getMemoryPoolMXBeans()
    metaspace = sum(pool.getUsage().getUsed() for pool in pools if pool.getName() == "Metaspace")
    codegen = jvm.org.apache.spark.metrics.source.CodegenMetrics
    return {
        "heap_mb": (runtime.totalMemory() - runtime.freeMemory()) / 2**20,
        "heap_committed_mb": runtime.totalMemory() / 2**20,
        "metaspace_mb": metaspace / 2**20,
        "classes": float(management.getClassLoadingMXBean().getLoadedClassCount()),
        "compiles": float(codegen.METRIC_COMPILATION_TIME().getCount()),
        "compile_ms_mean": codegen.METRIC_COMPILATION_TIME().getSnapshot().getMean(),
        "jvm_rss_mb": _rss_mb(jvm_pid),
        "workers_rss_mb": sum(_rss_mb(p) for p in _descendants(jvm_pid)),
        "python_rss_mb": _rss_mb(os.getpid()),
        "state_rows": float(state.get("numRowsTotal", 0)),
        "state_mb": state.get("memoryUsedBytes", 0) / 2**20,
        "state_disk_mb": disk / 2**20,
        "checkpoint_mb": _folder_bytes(checkpoint) / 2**20,
    }


def _folder_bytes(folder: Path) -> int:
    if not folder.exists():
        return 0
    total = 0
    for f in folder.rglob("*"):
        with contextlib.suppress(OSError):  # deleted by the state store's maintenance while we walk
            total += f.stat().st_size if f.is_file() else 0
    return total


def native_memory(pid: int) -> dict[str, float]:
    """The JVM's committed memory by NMT category (MB, ``nmt_<category>``) and NMT's total; {} without NMT."""
    try:
        out = subprocess.run(["jcmd", str(pid), "VM.native_memory", "summary"], capture_output=True,
                             text=True, timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, float] = {}
    total = re.search(r"Total: reserved=\d+KB, committed=(\d+)KB", out)
    if total:
        found["nmt_total_mb"] = int(total.group(1)) / 1024
    for name, committed in re.findall(r"^-\s+([A-Za-z ]+?) \(reserved=\d+KB, committed=(\d+)KB\)", out, re.M):
        found["nmt_" + name.strip().lower().replace(" ", "_") + "_mb"] = int(committed) / 1024
    return found


def class_histogram(pid: int) -> dict[str, float]:
    """Live heap bytes by class (``jcmd GC.class_histogram``: a full GC first); {} if jcmd fails."""
    try:
        out = subprocess.run(["jcmd", str(pid), "GC.class_histogram"], capture_output=True, text=True,
                             timeout=120).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {m.group(2): float(m.group(1)) for m in re.finditer(r"^\s*\d+:\s+\d+\s+(\d+)\s+(\S+)", out, re.M)}


def gc_log(path: Path) -> list[tuple[float, str, float, float, float, float]]:
    """Every collection of the driver JVM: (epoch s, kind, heap MB before, after, committed, pause ms)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        m = _GC_LINE.match(line)
        if m:
            at = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            # A collection started by a humongous allocation (an object of half a G1 region or more,
            # e.g. a state value) is counted apart.
            kind = m.group(2) + (" (humongous allocation)" if "Humongous" in line else "")
            events.append((at, kind, *(float(m.group(k)) for k in range(3, 7))))
    return events


def gc_report(events: list[tuple[float, str, float, float, float, float]], start: float, end: float) -> None:
    """Heap after GC and committed heap per minute of the steady state, and the GC pauses in it."""
    steady = [e for e in events if start <= e[0] <= end]
    # The bench's own System.gc() (Pause Full) at the start would make the first minute look lower.
    young = [e for e in steady if not e[1].startswith("Pause Full")]
    if not young:
        print("driver GC log: no collection in the steady state (or no log)")
        return
    pauses = [e[5] / 1000 for e in steady]
    print(f"driver GC in the steady state: {len(steady)} pauses, {sum(pauses):.1f} s in all "
          f"({sum(pauses) / (end - start):.1%} of the time), longest {max(pauses):.2f} s; kinds: "
          + ", ".join(f"{k} {sum(1 for e in steady if e[1] == k)}"
                      for k in dict.fromkeys(e[1] for e in steady)))  # fmt: skip
    minutes = int((end - start) // 60) or 1
    per_minute = []
    for k in range(minutes):
        lo, hi = start + 60 * k, start + 60 * (k + 1) if k < minutes - 1 else end
        window = [e for e in young if lo <= e[0] <= hi]
        if window:
            per_minute.append((k, min(e[3] for e in window), statistics.median(e[3] for e in window),
                               max(e[4] for e in window)))  # fmt: skip
    print("driver heap after GC per steady minute (minute: lowest / median after-GC, committed; MB):")
    print("  " + "; ".join(f"{k}: {lo:.0f}/{med:.0f}/{com:.0f}" for k, lo, med, com in per_minute))
    if len(per_minute) >= 2:
        first, last = per_minute[0], per_minute[-1]
        ratio = last[1] / first[1] if first[1] else float("nan")
        print(f"  live heap (lowest after-GC) first -> last minute: {first[1]:.0f} -> {last[1]:.0f} MB = "
              f"{ratio:.2f}x ({'flat' if ratio <= MEMORY_GROWTH_FLAT else 'GROWING'} at the "
              f"{MEMORY_GROWTH_FLAT:g}x bar); committed {first[3]:.0f} -> {last[3]:.0f} MB")  # fmt: skip


class BoundarySample:
    """``sample()`` run between two micro-batches (one committed and its cached rows released, the next
    not started), so a full GC there measures what the driver keeps, not a micro-batch in flight."""

    def __init__(self, handler, sample: Callable[[], dict[str, float]]) -> None:  # type: ignore[no-untyped-def]
        self.handler, self.sample = handler, sample
        self.taken: dict[str, float] | None = None
        if hasattr(handler, "on_batch_end"):
            handler.on_batch_end = self._hook
        else:  # a stream without the hook (an older nearline.py): sampled now, maybe mid-batch
            self.taken = sample()

    def _hook(self, _: Any) -> None:
        self.handler.on_batch_end = None
        self.taken = self.sample()

    def wait(self, query, seconds: float = 120) -> dict[str, float]:  # type: ignore[no-untyped-def]
        deadline = time.time() + seconds
        while self.taken is None and query.exception() is None and time.time() < deadline:
            time.sleep(0.1)
        if self.taken is None:  # no micro-batch ended (nothing left to do): the stream is idle anyway
            self.handler.on_batch_end = None
            print("(memory sampled while idle: no micro-batch ended to sample after)")
            return self.sample()
        return self.taken


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats_line(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"mean {statistics.mean(values):.2f}  p50 {pct(values, 0.5):.2f}  p95 {pct(values, 0.95):.2f}  "
            f"max {max(values):.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="steady-state minutes (after the warm-up)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="transactions per second fed")
    parser.add_argument("--file-rows", type=int, default=50, help="transactions per landing file")
    parser.add_argument("--cards", type=int, default=5000)
    parser.add_argument("--warmup-seconds", type=float, default=60.0, help="at least; and 3 micro-batches")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="memory sampled this often")
    parser.add_argument("--time-phases", action="store_true", help="time features and model apart")
    parser.add_argument("--conf", action="append", default=[], help="extra config override KEY=VALUE")
    parser.add_argument("--root", help="lakehouse folder (default: a fresh temporary one)")
    parser.add_argument("--java-options", default="", help="more driver JVM options (e.g. GC settings)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-nearline-"))
    root.mkdir(parents=True, exist_ok=True)  # the JVM's GC log is opened there before anything else
    os.environ.setdefault("LAKEML_PII_KEY", "bench-nearline-only-pii-key-0123456789")

    from pyspark.sql import functions as F

    from lakeml.config import load_config
    from lakeml.domains.banking.nearline import start_fraud_alerts
    from lakeml.lakehouse import Lakehouse
    from lakeml.session import build_spark

    phases = str(args.time_phases).lower()
    gc_file = root / "gc.log"
    # The conf's own driver JVM options (if any), then the GC log and NMT, then --java-options.
    configured = load_config("local", args.conf).spark.conf.get("spark.driver.extraJavaOptions", "")
    java_options = " ".join(
        o for o in (str(configured), GC_LOG_OPTIONS.format(log=gc_file), args.java_options) if o
    )
    overrides = [f"lakehouse.root={root}", "lakehouse.engine=delta-rs",
                 f"nearline.fraud_alerts.time_phases={phases}",
                 f"spark.conf.spark.driver.extraJavaOptions={java_options}", *args.conf]  # fmt: skip
    config = load_config("local", overrides)
    cfg = config.nearline.fraud_alerts
    print(f"load at start: {load()}")
    print(f"settings: trigger {cfg.trigger_seconds} s, max {cfg.max_files_per_trigger} files per trigger, "
          f"{cfg.state_partitions} state partitions, {cfg.state_buckets} state buckets, "
          f"{cfg.state_store} state store, "
          f"time_phases {cfg.time_phases}, engine delta-rs; "
          f"feed {args.rate:g} txn/s in {args.file_rows}-row files over {args.cards} cards; "
          f"driver JVM options: {java_options}")  # fmt: skip
    spark = build_spark(config)
    landing = root / "landing" / "transactions"
    landing.mkdir(parents=True)
    checkpoint = root / cfg.checkpoint_dir
    register_model(spark, config)
    progress: list[dict[str, Any]] = []
    progress_listener(spark, progress)
    query, handler = start_fraud_alerts(spark, config)
    feeder = Feeder(landing, args.rate, args.file_rows, args.cards)
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    began = time.time()
    feeder.start()

    # Warm-up: JIT, Python workers, the first model load, the first state versions.
    while time.time() - began < args.warmup_seconds or len(handler.metrics) < 3:
        if query.exception() is not None:
            raise SystemExit(f"the stream failed: {query.exception()}")
        if time.time() - began > 600:
            query.stop()
            raise SystemExit(
                f"no 3 micro-batches in 10 minutes ({len(handler.metrics)} done; load: {load()})"
            )
        time.sleep(0.5)
    histograms: list[dict[str, float]] = []

    def boundary_sample() -> dict[str, float]:
        # A first full GC, then a second (the histogram's) a second later: objects only weakly held
        # (accumulators, broadcasts, RDDs of finished micro-batches) leave Spark's registries when its
        # ContextCleaner has processed the first GC's reference queue, not at the GC itself.
        spark.sparkContext._jvm.java.lang.System.gc()
        time.sleep(1.0)
        histograms.append(class_histogram(jvm_pid))  # its full GC is the sample's
        return memory(spark, progress, checkpoint, gc=not histograms[-1])

    first = BoundarySample(handler, boundary_sample).wait(query)
    # jcmd outside the hook (the stream is not held for it); RSS read again beside it: G1 gives the
    # heap the full GC freed back to the OS a moment after it, so the hook's RSS is not comparable.
    first.update(native_memory(jvm_pid), rss_at_nmt_mb=_rss_mb(jvm_pid))
    # The micro-batch after the sample waited for it: it is left out of the steady state too.
    sampled = len(handler.metrics)
    while len(handler.metrics) <= sampled and query.exception() is None:
        time.sleep(0.1)
    warm = len(handler.metrics)
    warm_at = time.time()
    samples = [(0.0, memory(spark, progress, checkpoint))]
    steady_end = warm_at + args.minutes * 60
    while time.time() < steady_end:
        if query.exception() is not None:
            raise SystemExit(f"the stream failed: {query.exception()}")
        time.sleep(min(args.sample_seconds, max(0.0, steady_end - time.time())))
        samples.append((time.time() - warm_at, memory(spark, progress, checkpoint)))
    # Asked before the feeder stops, so a micro-batch is running or due when it is waited for.
    end_sample = BoundarySample(handler, boundary_sample)
    feeder.stop.set()
    feeder.join()
    stopped_at = time.time()
    steady = handler.metrics[warm:]
    last = end_sample.wait(query)
    last.update(native_memory(jvm_pid), rss_at_nmt_mb=_rss_mb(jvm_pid))
    # Up to a minute to drain what landed; what is left then is reported as the backlog.
    fed = feeder.fed_until(stopped_at)
    deadline = time.time() + 60
    while time.time() < deadline and sum(sum(m.counts.values()) for m in handler.metrics) < fed:
        time.sleep(1)
    query.stop()
    end_load = load()

    metrics = handler.metrics
    processed = [sum(m.counts.values()) for m in metrics]
    print(f"\nfed {fed} transactions in {len(feeder.landed)} files over {stopped_at - began:.0f} s "
          f"({fed / (stopped_at - began):.0f}/s); {len(metrics)} micro-batches")  # fmt: skip
    print(f"backlog after a 60 s drain: {fed - sum(processed)} of {fed} transactions not processed")

    committed = spark.createDataFrame(
        [(m.batch_id, m.committed_at, m.started_at) for m in metrics], "b long, c double, s double"
    )
    rows = Lakehouse(spark, config).table("gold", "fraud_alerts").read()
    latency = rows.join(committed, rows.stream_batch_id == committed.b).select(
        "stream_batch_id",
        (F.col("c") - F.unix_micros("arrived_at") / 1e6).alias("latency"),
        (F.col("s") - F.unix_micros("arrived_at") / 1e6).alias("wait"),
    )

    def quantiles(ids: list[int]) -> Any:
        return (
            latency.where(F.col("stream_batch_id").isin(ids))
            .agg(
                F.percentile_approx("latency", [0.5, 0.95, 0.99], 100000).alias("p"),
                F.max("latency").alias("max"),
                F.percentile_approx("wait", [0.5, 0.99], 100000).alias("w"),
                F.count("*").alias("n"),
            )
            .first()
        )

    # ------------------------------------------------------------------ warm-up, apart
    w = quantiles([m.batch_id for m in metrics[:warm]])
    print(f"\nWARM-UP ({warm} micro-batches, {warm_at - began:.0f} s; excluded below): first micro-batch "
          f"{metrics[0].committed_at - metrics[0].started_at:.1f} s; latency over {w['n']} transactions: "
          f"p50 {w['p'][0]:.2f} s, p99 {w['p'][2]:.2f} s, max {w['max']:.2f} s" if w["p"] else
          f"\nWARM-UP: {warm} micro-batches, nothing scored")  # fmt: skip
    for m in metrics[: min(warm, 5)]:
        print(f"  batch {m.batch_id}: {sum(m.counts.values())} rows, "
              + ", ".join(f"{k} {v:.2f}" for k, v in m.seconds.items()))  # fmt: skip

    # ------------------------------------------------------------------ steady state
    if len(steady) < 2:
        print("\nSTEADY STATE: fewer than 2 micro-batches: no throughput or latency figures")
        for name, s in (("start (after warm-up)", first), ("end", last)):
            print(f"{name}: driver JVM heap after GC {s['heap_mb']:.0f} MB, JVM RSS {s['jvm_rss_mb']:.0f} "
                  "MB, "
                  f"state {s['state_rows']:.0f} buckets, {s['state_mb']:.1f} MB")  # fmt: skip
        print(f"load at end: {end_load}")
        spark.stop()
        return
    span = steady[-1].committed_at - warm_at
    done = sum(sum(m.counts.values()) for m in steady)
    throughput = done / span
    fed_steady = feeder.fed_until(stopped_at) - feeder.fed_until(warm_at)
    backlog_start = feeder.fed_until(warm_at) - sum(processed[:warm])
    backlog_end = feeder.fed_until(steady[-1].committed_at) - sum(processed)
    print(f"\nSTEADY STATE ({args.minutes:g} min, {len(steady)} micro-batches, "
          f"mean {done / len(steady):.0f} rows each)")  # fmt: skip
    print(f"sustained throughput: {throughput:.0f} txn/s = "
          f"{throughput / (fed_steady / (stopped_at - warm_at)):.2f}x "
          f"the feed rate, {throughput / TARGET_RATE:.2f}x the {TARGET_RATE:g}/s target; "
          f"backlog {backlog_start} at the start, {backlog_end} at the end")  # fmt: skip
    q = quantiles([m.batch_id for m in steady])
    p50, p95, p99 = q["p"]
    print(f"arrival -> alert committed latency over {q['n']} transactions: p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"p99 {p99:.2f} s (max {q['max']:.2f} s) = {p99 / TARGET_P99_S:.2f}x the {TARGET_P99_S:g} s "
          "target")  # fmt: skip
    print(f"  of which waiting for the micro-batch to start: p50 {q['w'][0]:.2f} s, p99 {q['w'][1]:.2f} s")
    print("micro-batch seconds (our timers, steady batches):")
    print(f"  {'total':<22} {stats_line([m.committed_at - m.started_at for m in steady])}")
    phases = list(dict.fromkeys(k for m in steady for k in m.seconds))
    for k in phases:
        print(f"  {k:<22} {stats_line([m.seconds.get(k, 0.0) for m in steady])}")
    steady_ids = {m.batch_id for m in steady}
    spark_steady = [p for p in progress if p["batchId"] in steady_ids]
    if spark_steady:
        print("micro-batch seconds (Spark's query progress, durationMs, steady batches):")
        keys = list(dict.fromkeys(k for p in spark_steady for k in p["durationMs"]))
        for k in keys:
            print(f"  {k:<22} {stats_line([p['durationMs'].get(k, 0) / 1000 for p in spark_steady])}")
        states = [p["stateOperators"][0] for p in spark_steady if p.get("stateOperators")]
        # inside read_state: the per-card state step, its commit
        for k in ("allUpdatesTimeMs", "commitTimeMs"):
            print(f"  state {k:<16} {stats_line([st.get(k, 0) / 1000 for st in states])}")
    # A fixed cost that grows with time (a longer listing, a longer log, a bigger state) shows as a
    # later quarter slower than the first at the same feed rate.
    quarter = max(1, len(steady) // 4)
    early, late = steady[:quarter], steady[-quarter:]
    by_id = {p["batchId"]: p for p in progress}
    print(f"first vs last quarter of the steady micro-batches ({quarter} each; mean seconds, mean rows):")
    print(f"  {'rows':<22} {statistics.mean(sum(m.counts.values()) for m in early):.0f} -> "
          f"{statistics.mean(sum(m.counts.values()) for m in late):.0f}")  # fmt: skip
    print(f"  {'total':<22} {statistics.mean(m.committed_at - m.started_at for m in early):.2f} -> "
          f"{statistics.mean(m.committed_at - m.started_at for m in late):.2f}")  # fmt: skip
    for k in phases:
        print(f"  {k:<22} {statistics.mean(m.seconds.get(k, 0.0) for m in early):.2f} -> "
              f"{statistics.mean(m.seconds.get(k, 0.0) for m in late):.2f}")  # fmt: skip
    for k in ("latestOffset", "getBatch", "queryPlanning", "addBatch", "walCommit", "commitOffsets"):
        ms = [[by_id[m.batch_id]["durationMs"].get(k, 0) / 1000 for m in part if m.batch_id in by_id]
              for part in (early, late)]  # fmt: skip
        if all(ms):
            print(f"  spark {k:<16} {statistics.mean(ms[0]):.2f} -> {statistics.mean(ms[1]):.2f}")
    for name, s in (("start (after warm-up)", first), ("end", last)):
        print(f"{name}: driver JVM heap after GC {s['heap_mb']:.0f} MB, JVM RSS {s['jvm_rss_mb']:.0f} MB, "
              f"Python workers RSS {s['workers_rss_mb']:.0f} MB, driver Python RSS {s['python_rss_mb']:.0f} "
              "MB; "
              f"state {s['state_rows']:.0f} buckets, {s['state_mb']:.1f} MB in memory, "
              f"{s['state_disk_mb']:.1f} MB in the checkpoint")  # fmt: skip
    for name, s in (("start (after warm-up)", first), ("end", last)):
        print(f"{name}: JVM heap committed {s['heap_committed_mb']:.0f} MB, "
              f"metaspace {s['metaspace_mb']:.0f} MB, "
              f"{s['classes']:.0f} classes loaded, {s['compiles']:.0f} code generations compiled "
              f"(recent mean {s['compile_ms_mean']:.0f} ms)")  # fmt: skip
    # A plan whose generated code differs every micro-batch (e.g. an inlined per-batch literal) is
    # compiled again each time: classes and metaspace then grow with the number of micro-batches.
    steady_batches = max(1, len(steady))
    metaspace_kb = (last["metaspace_mb"] - first["metaspace_mb"]) / steady_batches * 1024
    print(f"per steady micro-batch: {(last['compiles'] - first['compiles']) / steady_batches:.1f} code "
          f"compilations, {(last['classes'] - first['classes']) / steady_batches:.1f} classes loaded, "
          f"{metaspace_kb:.0f} kB metaspace")  # fmt: skip
    gc_report(gc_log(gc_file), warm_at, steady_end)
    if "nmt_total_mb" in first and "nmt_total_mb" in last:
        names = [k for k in first if k.startswith("nmt_") and k != "nmt_total_mb" and k in last]
        grew = sorted(names, key=lambda k: last[k] - first[k], reverse=True)
        print("driver JVM native memory (NMT committed MB, start -> end; the categories that grew most): "
              + ", ".join(f"{k[4:-3]} {first[k]:.0f} -> {last[k]:.0f}" for k in grew[:6]))  # fmt: skip
        outside = [s["rss_at_nmt_mb"] - s["nmt_total_mb"] for s in (first, last)]
        print(f"  NMT total {first['nmt_total_mb']:.0f} -> {last['nmt_total_mb']:.0f} MB (committed, not all "
              f"resident); RSS minus NMT total, read together (native libraries' own mallocs: RocksDB, glibc "
              f"arenas; a lower bound, as committed heap pages need not be resident) "
              f"{outside[0]:.0f} -> {outside[1]:.0f} MB")  # fmt: skip
    else:
        print("driver JVM native memory: not available (jcmd VM.native_memory failed)")
    for name, s in (("start (after warm-up)", first), ("end", last)):
        print(f"{name}: whole checkpoint {s['checkpoint_mb']:.1f} MB")
    if len(histograms) == 2 and all(histograms):
        start_h, end_h = histograms
        grew = sorted(end_h, key=lambda c: end_h[c] - start_h.get(c, 0.0), reverse=True)[:8]
        print("live heap by class, start -> end (MB; the 8 that grew most): "
              + ", ".join(f"{c} {start_h.get(c, 0.0) / 2**20:.1f} -> {end_h[c] / 2**20:.1f}"
                          for c in grew))  # fmt: skip

    def ratio(key: str) -> float:
        return last[key] / first[key] if first.get(key) else float("nan")

    heap_ratio, rss_ratio = ratio("heap_mb"), ratio("jvm_rss_mb")
    # Flat = nothing that can grow without bound grows: the live heap (after a full GC) and the
    # native memory the JVM tracks. RSS also follows the committed heap, which G1 sizes to the
    # allocation rate up to spark.driver.memory (bounded: not a leak), so it is printed, not judged.
    flat = "flat" if heap_ratio <= MEMORY_GROWTH_FLAT else "GROWING"
    non_heap = [x.get("nmt_total_mb", 0.0) - x.get("nmt_java_heap_mb", 0.0) for x in (first, last)]
    print(f"memory end/start: live heap (after a full GC) {heap_ratio:.2f}x ({flat} at the "
          f"{MEMORY_GROWTH_FLAT:g}x bar); JVM RSS {rss_ratio:.2f}x, committed heap "
          f"{ratio('heap_committed_mb'):.2f}x; JVM-tracked memory besides the heap (NMT) "
          f"{non_heap[0]:.0f} -> {non_heap[1]:.0f} MB; state on disk {ratio('state_disk_mb'):.2f}x, "
          f"whole checkpoint {ratio('checkpoint_mb'):.2f}x (the state grows by design until the "
          "30-day window is full)")  # fmt: skip
    print(
        "memory every sample (s after warm-up: heap MB / heap committed MB / JVM RSS MB / metaspace MB / "
        "workers RSS MB / state buckets / state MB / checkpoint state MB):"
    )
    print("  " + "; ".join(f"{t:.0f}: {s['heap_mb']:.0f}/{s['heap_committed_mb']:.0f}/{s['jvm_rss_mb']:.0f}/"
                           f"{s['metaspace_mb']:.0f}/{s['workers_rss_mb']:.0f}/"
                           f"{s['state_rows']:.0f}/{s['state_mb']:.1f}/{s['state_disk_mb']:.0f}"
                           for t, s in samples))  # fmt: skip
    per_batch = root / "micro_batches.jsonl"
    with per_batch.open("w") as out:
        by_id = {p["batchId"]: p for p in progress}
        for m in metrics:
            spark_side = by_id.get(m.batch_id, {})
            out.write(json.dumps({"batch_id": m.batch_id, "counts": m.counts, "seconds": m.seconds,
                                  "started_at": m.started_at, "committed_at": m.committed_at,
                                  "spark_durations_ms": spark_side.get("durationMs"),
                                  "state": (spark_side.get("stateOperators") or [None])[0]})
                      + "\n")  # fmt: skip
    print(f"every micro-batch: {per_batch}")
    print(f"load at end: {end_load}")
    spark.stop()


if __name__ == "__main__":
    main()
