"""banking.fraud_alerts: the nearline stream (landing → silver contract → per-card state → champion →
gold/fraud_alerts)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.domains.banking.card_state import (
    LATE_REASON,
    _cards_of,
    _first_in_window,
    _merged,
    _pruned,
    _replaced,
    _sequential_sums,
    empty_bucket,
)
from lakeml.domains.banking.nearline import APP_ID, FRAUD_ALERTS_SCHEMA, run_fraud_alerts
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.steps import DateRange
from tests.conftest import with_engine
from tests.nearline_data import alerts, deliver, line, register_model, stream_config

D = dt.datetime(2026, 3, 10)
H = dt.timedelta(hours=1)


def test_each_micro_batch_commits_once_with_its_txn_id_and_a_replay_commits_nothing(spark, tmp_path, engine):
    config = with_engine(stream_config(tmp_path), engine)
    register_model(spark, config)
    deliver(config, "a.csv", [line("t1", D, 1, 10.0), line("t2", D + H, 1, 20.0), "not,a,csv"], 0)
    deliver(config, "b.csv", [line("t3", D + 2 * H, 2, 30.0), line("t1", D, 1, 10.0)], 1)  # t1 again
    result = run_fraud_alerts(spark, config, available_now=True)
    assert result["batches"] == 2
    assert (result["scored"], result["duplicate"], result["rejected"]) == (3, 1, 1)

    lake = Lakehouse(spark, config)
    table = lake.table("gold", "fraud_alerts")
    assert table.schema() == FRAUD_ALERTS_SCHEMA
    assert table.transaction_version(APP_ID) == 1
    got = table.read().select("txn_id", "stream_batch_id", "model_version", "txn_count_24h")
    assertDataFrameEqual(
        got,
        spark.createDataFrame(
            [("t1", 0, "1", 0), ("t2", 0, "1", 1), ("t3", 1, "1", 0)],
            "txn_id string, stream_batch_id long, model_version string, txn_count_24h long",
        ),
        checkRowOrder=False,
    )
    quarantined = lake.table("ops", "quarantine").read().where(F.col("feed") == "stream.transactions")
    assert [(r.raw_record, r.reason) for r in quarantined.collect()] == [
        ("not,a,csv", "malformed CSV (expected 13 fields)")
    ]

    # The query's last commit is lost (a crash after the Delta commits): the restart replays batch 1.
    checkpoint = Path(str(config.lakehouse.root)) / config.nearline.fraud_alerts.checkpoint_dir / "query"
    for name in ("1", ".1.crc"):
        (checkpoint / "commits" / name).unlink(missing_ok=True)
    version = table.version()
    again = run_fraud_alerts(spark, config, available_now=True)
    assert again["batches"] == 1
    assert table.version() == version  # the replayed batch committed nothing
    assert table.read().count() == 3


# ---------------------------------------------------------------------------------------------- one day

CARDS = (1, 2, 3, 4)
PLACES = (("DE", 52.52, 13.405), ("FR", 48.857, 2.352), ("JP", 35.68, 139.69))


def day_lines(day: dt.datetime, per_card: int, start_hour: int = 0, hours: int = 24) -> list[tuple[str, str]]:
    """(txn_id, landing line) of a generated stretch of ``day``: a few transactions per card, some at the
    same instant."""
    out = []
    for card in CARDS:
        for k in range(per_card):
            minute = (
                ((card * 37 + k * 53 + day.day * 11) % (hours * 60))
                if k != 2
                else ((card * 37) % (hours * 60))
            )
            ts = day + dt.timedelta(hours=start_hour, minutes=minute)
            country, lat, lon = PLACES[(card + k + day.day) % 3]
            amount = 5 + ((card * 31 + k * 17 + day.day * 7) % 90) * 1.37
            txn_id = f"c{card}-{ts:%d%H%M}-{k}"
            out.append(
                (txn_id, line(txn_id, ts, card, amount, f"M{(card + k) % 4}", country, "5411", lat, lon))
            )
    return out


def shuffled(lines: list[tuple[str, str]]) -> list[str]:
    """Out of order within the file (a fixed permutation: reversed, odd positions first)."""
    rev = [text for _, text in reversed(lines)]
    return rev[1::2] + rev[0::2]


def silver_from_lines(spark, config, lines: list[str]) -> None:
    """silver/transactions from landing lines through silver's own parse (as bronze → silver would load
    them)."""
    from lakeml.domains.banking.silver import (
        CHARGEBACKS_SILVER_SCHEMA,
        TRANSACTIONS_SILVER_SCHEMA,
        parse_transactions,
    )
    from lakeml.ingest.silver import ParseRules, require_pii_key

    now = dt.datetime.now(dt.UTC)
    bronze = spark.createDataFrame(
        [(text, None, "file:/landing/x.csv", now, "b0") for text in lines],
        "value string, raw_bytes binary, _source_file string, _ingested_at timestamp, _batch_id string",
    )
    parsed = parse_transactions(bronze, ParseRules(config.silver, require_pii_key(config)))
    assert parsed.where(F.col("_reject_reason").isNotNull()).count() == 0
    lake = Lakehouse(spark, config)
    silver = lake.table("silver", "transactions").create(TRANSACTIONS_SILVER_SCHEMA, ["event_date"])
    silver.append(parsed.select(*TRANSACTIONS_SILVER_SCHEMA.fieldNames()))
    lake.table("silver", "chargebacks").create(CHARGEBACKS_SILVER_SCHEMA, ["event_date"])


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body it is POSTed."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def one_day(spark, tmp_path_factory):
    """A generated day (after 3 days of history) through a running stream, the champion changing midway."""
    from types import SimpleNamespace

    from lakeml.domains.banking.features import build_transaction_features
    from lakeml.domains.banking.fraud_model import score_fraud
    from lakeml.domains.banking.nearline import start_fraud_alerts

    receiver = Receiver()
    root = tmp_path_factory.mktemp("nearline_day")
    config = stream_config(root, "nearline.fraud_alerts.trigger_seconds=0.5",
                           f"nearline.fraud_alerts.sink.webhook_url={receiver.url}")  # fmt: skip
    history = [x for d in (3, 2, 1) for x in day_lines(D - d * 24 * H, 3)]
    morning = day_lines(D, 4, 0, 12)
    evening = day_lines(D, 4, 12, 12)
    last_evening = max(evening, key=lambda x: x[0].split("-")[1])  # the day's latest transaction
    card = int(last_evening[0][1])
    last_ts = dt.datetime.strptime("2026-03-" + last_evening[0].split("-")[1], "%Y-%m-%d%H%M")
    # Late but within the watermark (60 min behind the newest event): the same card, 15 min earlier.
    within = ("late-ok", line("late-ok", last_ts - dt.timedelta(minutes=15), card, 77.0))
    # Later than the watermark: a card of its own, so no other transaction's batch features count it.
    too_late = ("late-out", line("late-out", D + 2 * H, 9, 55.0))
    silver_from_lines(spark, config, [t for _, t in (*history, *morning, *evening, within, too_late)])
    build_transaction_features(spark, config, DateRange((D - 3 * 24 * H).date(), D.date()))
    gold = Lakehouse(spark, config).table("gold", "transaction_features")
    pinned = {"input.gold/transaction_features.version": str(gold.version())}  # for the batch's drift check
    first = register_model(spark, config, threshold=0.5, tags=pinned)

    (Path(config.landing_path()) / "transactions").mkdir(parents=True)
    query, handler = start_fraud_alerts(spark, config)
    try:
        deliver(config, "h.csv", shuffled(history), 0)
        deliver(config, "d1.csv", shuffled(morning), 1)
        query.processAllAvailable()
        second = register_model(
            spark, config, flip=True, threshold=0.0, tags=pinned
        )  # promoted while the query runs
        deliver(config, "d2.csv", shuffled(evening), 2)
        query.processAllAvailable()
        deliver(config, "late.csv", [within[1], too_late[1]], 3)
        query.processAllAvailable()
    finally:
        query.stop()
    yield SimpleNamespace(
        config=config, first=first, second=second, handler=handler, receiver=receiver,
        within=within[0], too_late=too_late[0], affected=last_evening[0],
        day1=[x[0] for x in (*history, *morning)], day2=[x[0] for x in (*evening, within)],
        batch_scores=lambda: score_fraud(spark, config, DateRange.single(D.date())),
    )  # fmt: skip


FEATURE_COLUMNS = [f.name for f in FRAUD_ALERTS_SCHEMA.fields][
    : FRAUD_ALERTS_SCHEMA.fieldNames().index("score")
]


def test_every_feature_of_every_streamed_transaction_equals_the_batch_features(spark, one_day):
    t = one_day
    gold = Lakehouse(spark, t.config).table("gold", "transaction_features").read().select(*FEATURE_COLUMNS)
    stream = alerts(spark, t.config).select(*FEATURE_COLUMNS)
    # Every transaction once; the one later than the watermark is not scored (quarantined below).
    assert stream.count() == stream.select("txn_id").distinct().count() == gold.count() - 1
    assert {r.txn_id for r in gold.join(stream, "txn_id", "left_anti").collect()} == {t.too_late}
    # Out of order within files and micro-batches, and late within the watermark: the same features,
    # except the one transaction scored before a late, earlier one of its card arrived (it cannot
    # count what the stream had not seen yet: one transaction fewer in its windows).
    same = stream.where(F.col("txn_id") != t.affected)
    assertDataFrameEqual(
        same.orderBy("txn_id"),
        gold.join(same.select("txn_id"), "txn_id").select(*FEATURE_COLUMNS).orderBy("txn_id"),
        checkRowOrder=True, rtol=1e-9,
    )  # fmt: skip
    got = stream.where(F.col("txn_id") == t.affected).first()
    want = gold.where(F.col("txn_id") == t.affected).first()
    assert (got.txn_count_1h, got.txn_count_24h) == (want.txn_count_1h - 1, want.txn_count_24h - 1)
    late = Lakehouse(spark, t.config).table("ops", "quarantine").read().where(F.col("reason") == LATE_REASON)
    assert [json.loads(r.raw_record)["txn_id"] for r in late.collect()] == [t.too_late]


def test_a_new_champion_scores_from_the_next_micro_batch_without_a_restart(spark, one_day):
    t = one_day
    rows = alerts(spark, t.config)
    versions = {r.txn_id: r.model_version for r in rows.select("txn_id", "model_version").collect()}
    assert {versions[x] for x in t.day1} == {t.first}
    assert {versions[x] for x in t.day2} == {t.second}
    assert t.first != t.second
    # the threshold travels with the version: v2's 0.0 alerts everything it scored
    assert rows.where((F.col("model_version") == t.second) & ~F.col("alert")).count() == 0


def test_alerts_reach_the_hourly_json_lines_and_the_webhook_once_each(spark, one_day):
    import json

    t = one_day
    flagged = {r.txn_id for r in alerts(spark, t.config).where("alert").select("txn_id").collect()}
    assert flagged
    folder = Path(str(t.config.lakehouse.root)) / "alerts"
    lines = [
        json.loads(x) for f in sorted(folder.glob("fraud-alerts-*.jsonl")) for x in f.read_text().splitlines()
    ]
    assert sorted(x["txn_id"] for x in lines) == sorted(flagged)
    posted = [a["txn_id"] for body in t.receiver.bodies for a in body["alerts"]]
    assert sorted(posted) == sorted(flagged)


def test_the_daily_batch_and_the_stream_give_the_same_score_for_the_same_model_version(spark, one_day):
    t = one_day
    t.batch_scores()
    batch = Lakehouse(spark, t.config).table("gold", "fraud_scores").read()
    stream = alerts(spark, t.config).where(
        (F.col("model_version") == t.second) & (F.col("txn_id") != t.affected)
    )
    assert stream.count() > 5
    assertDataFrameEqual(
        stream.select("txn_id", "score", "alert", "threshold", "model_version").orderBy("txn_id"),
        batch.join(stream.select("txn_id"), "txn_id")
        .select("txn_id", "score", "alert", "threshold", "model_version")
        .orderBy("txn_id"),
        checkRowOrder=True, rtol=1e-9,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- crashes


class HangingReceiver(Receiver):
    """A webhook that, while ``hang`` is set, never answers (the stream waits inside a micro-batch)."""

    def __init__(self) -> None:
        import threading

        self.reached = threading.Event()
        self.hang = threading.Event()
        self.hang.set()
        super().__init__()
        handler = self.server.RequestHandlerClass
        outer = self
        original = handler.do_POST

        def do_post(self) -> None:
            if outer.hang.is_set():
                outer.reached.set()
                self.rfile.read(int(self.headers["Content-Length"]))
                import time

                time.sleep(3600)
            original(self)

        handler.do_POST = do_post


def test_sigkill_mid_batch_then_restart_with_another_model_scores_everything_exactly_once(spark, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    receiver = HangingReceiver()
    overrides = [
        "nearline.fraud_alerts.sink.jsonl_dir=",
        f"nearline.fraud_alerts.sink.webhook_url={receiver.url}",
    ]
    config = stream_config(tmp_path, *overrides)
    first = register_model(spark, config, threshold=0.0)  # every transaction alerts: the webhook is called
    a = deliver(config, "a.csv", [line(f"a{i}", D + i * H, i % 2, 10.0 + i) for i in range(4)], 0)
    deliver(config, "b.csv", [line(f"b{i}", D + (5 + i) * H, i % 2, 20.0 + i) for i in range(3)], 1)
    args = ["stream", "banking.fraud_alerts", "--env", "test", f"--conf=lakehouse.root={tmp_path}"]
    args += [f"--conf={o}" for o in ("nearline.fraud_alerts.max_files_per_trigger=1", *overrides)]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from lakeml.cli import main; sys.exit(main(sys.argv[1:]))",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Batch 0's alerts are committed to the table; its webhook call hangs: the query's commit log has no
        # batch 0.
        assert receiver.reached.wait(600), "the stream never reached the sink"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
    table = Lakehouse(spark, config).table("gold", "fraud_alerts")
    assert table.transaction_version(APP_ID) == 0
    assert not (tmp_path / config.nearline.fraud_alerts.checkpoint_dir / "query" / "commits" / "0").exists()

    second = register_model(spark, config, flip=True, threshold=0.0)  # a new champion before the restart
    receiver.hang.clear()
    receiver.bodies.clear()
    result = run_fraud_alerts(spark, config, available_now=True)
    assert result["batches"] == 2  # batch 0 replayed, batch 1 new
    rows = table.read()
    assert rows.count() == rows.select("txn_id").distinct().count() == 7
    got = {r.txn_id: (r.stream_batch_id, r.model_version) for r in rows.collect()}
    # the replayed batch was not rescored by the new champion: its commit was a no-op
    assert got == {**{f"a{i}": (0, first) for i in range(4)}, **{f"b{i}": (1, second) for i in range(3)}}
    # the sink is at-least-once: batch 0's alerts (not delivered before the kill) were sent on restart, from
    # the table
    sent = {
        (body["stream_batch_id"], a["txn_id"], a["model_version"])
        for body in receiver.bodies
        for a in body["alerts"]
    }
    assert sent == {(b, txn, v) for txn, (b, v) in got.items()}
    assert a.exists()


# ---------------------------------------------------------------------------------------------- bad input


def test_a_broken_champion_promoted_while_the_stream_runs_stops_it_with_nothing_of_the_batch_committed(
    spark, tmp_path
):
    import mlflow
    from pyspark.errors import StreamingQueryException

    from lakeml.domains.banking.nearline import start_fraud_alerts

    config = stream_config(tmp_path, "nearline.fraud_alerts.trigger_seconds=0.2")
    good = register_model(spark, config)
    deliver(config, "a.csv", [line("a0", D, 1, 10.0)], 0)
    query, _ = start_fraud_alerts(spark, config)
    try:
        query.processAllAvailable()
        # Promoted while the query runs; its files are gone (a half-copied or deleted artifact).
        broken = register_model(spark, config, experiment="fraud-stream-broken")
        shutil.rmtree(tmp_path / "_mlflow" / "artifacts" / "fraud-stream-broken")
        deliver(config, "b.csv", [line("b0", D + H, 1, 20.0), "not,a,csv"], 1)
        with pytest.raises(
            StreamingQueryException,
            match=rf"champion lakeml-fraud v{broken} cannot be "
            r"loaded",
        ):
            query.processAllAvailable()
        assert not query.isActive
    finally:
        query.stop()
    # Nothing of the failed micro-batch is committed: no alert row and no quarantine row of b.csv.
    table = Lakehouse(spark, config).table("gold", "fraud_alerts")
    assert [r.txn_id for r in table.read().collect()] == ["a0"]
    quarantine = Lakehouse(spark, config).table("ops", "quarantine")
    assert not quarantine.exists() or quarantine.read().count() == 0
    commits = tmp_path / config.nearline.fraud_alerts.checkpoint_dir / "query" / "commits"
    assert (commits / "0").exists() and not (commits / "1").exists()
    # Restarted while still broken: the same clear error before the query starts.
    with pytest.raises(JobFailed, match=rf"champion lakeml-fraud v{broken} cannot be loaded"):
        run_fraud_alerts(spark, config, available_now=True)
    # Fixed (the previous version re-promoted): the restart continues with b.csv, each row once.
    client = mlflow.MlflowClient(tracking_uri=str(mlflow.get_tracking_uri()))
    client.set_registered_model_alias("lakeml-fraud", "champion", good)
    result = run_fraud_alerts(spark, config, available_now=True)
    assert (result["batches"], result["scored"], result["rejected"]) == (1, 1, 1)
    got = {(r.txn_id, r.model_version, r.stream_batch_id) for r in table.read().collect()}
    assert got == {("a0", good, 0), ("b0", good, 1)}
    assert [(r.raw_record, r.batch_id) for r in quarantine.read().collect()] == [
        ("not,a,csv", "fraud_alerts-00000001")
    ]


def test_a_schema_change_in_the_landing_files_is_quarantined_with_reasons_and_the_stream_goes_on(
    spark, tmp_path
):
    from lakeml.domains.banking.nearline import start_fraud_alerts
    from tests.nearline_data import HEADER

    config = stream_config(tmp_path, "nearline.fraud_alerts.trigger_seconds=0.2")
    register_model(spark, config)
    deliver(config, "a.csv", [line("a0", D, 1, 10.0)], 0)
    query, _ = start_fraud_alerts(spark, config)
    try:
        query.processAllAvailable()
        # A new column: the header and every line of the new layout are quarantined, none scored.
        added = [
            HEADER + ",device_id",
            line("n0", D + H, 1, 20.0) + ",dev-1",
            line("n1", D + H, 2, 30.0) + ",dev-2",
        ]
        deliver(config, "new_column.csv", added, 1, header=False)
        # A renamed column, same layout: the header is quarantined (ops sees the change); the lines
        # parse by position, as silver parses them, and are scored.
        renamed = [HEADER.replace(",amount,", ",amount_value,"), line("r0", D + 2 * H, 1, 40.0)]
        deliver(config, "renamed.csv", renamed, 2, header=False)
        query.processAllAvailable()
        assert query.isActive and query.exception() is None  # bad lines are data, not a reason to stop
    finally:
        query.stop()
    deliver(config, "after.csv", [line("z0", D + 3 * H, 3, 50.0)], 3)
    restarted = run_fraud_alerts(spark, config, available_now=True)
    assert (restarted["batches"], restarted["scored"]) == (1, 1)  # only the new file: where it stopped

    lake = Lakehouse(spark, config)
    scored = {r.txn_id for r in lake.table("gold", "fraud_alerts").read().collect()}
    assert scored == {"a0", "r0", "z0"}
    quarantined = {
        (Path(r.source_file).name, r.raw_record.split(",")[0], r.reason.split(" (")[0])
        for r in lake.table("ops", "quarantine").read().collect()
    }
    assert quarantined == {
        ("new_column.csv", "txn_id", "unexpected CSV header"),
        ("new_column.csv", "n0", "malformed CSV"),
        ("new_column.csv", "n1", "malformed CSV"),
        ("renamed.csv", "txn_id", "unexpected CSV header"),
    }


def test_a_card_never_seen_before_is_scored_with_first_transaction_features(spark, one_day):
    t = one_day
    rows = alerts(spark, t.config)
    first_ts = rows.groupBy("card_token").agg(F.min("ts").alias("ts"))
    firsts = rows.join(first_ts, ["card_token", "ts"]).collect()
    assert len(firsts) >= len(CARDS)
    for r in firsts:
        # Nothing before it: zero counts and sums, no previous transaction, no spread; still scored.
        assert (r.txn_count_1h, r.txn_count_24h, r.txn_count_7d, r.txn_count_30d) == (0, 0, 0, 0)
        assert (r.amount_sum_24h, r.amount_sum_30d) == (0.0, 0.0)
        assert (r.distinct_merchants_24h, r.distinct_countries_24h) == (0, 0)
        assert (r.seconds_since_prev, r.km_from_prev, r.speed_kmh_from_prev) == (None, None, None)
        assert (r.amount_mean_30d, r.amount_std_30d, r.amount_zscore_30d) == (None, None, None)
        assert r.mcc_risk_rate is not None and r.local_hour is not None
        assert 0.0 <= r.score <= 1.0 and r.model_version == t.first


# ---------------------------------------------------------------------------------------------- state


def test_the_bucketed_state_keeps_only_the_longest_window_and_its_bucket_count_is_pinned(spark, tmp_path):
    from lakeml.domains.banking.card_state import load_bucket

    # One bucket: every card shares the state value, as thousands of cards do per bucket in production.
    config = stream_config(tmp_path, "nearline.fraud_alerts.state_buckets=1")
    register_model(spark, config)
    later = D + dt.timedelta(days=40)
    deliver(config, "a.csv", [line("a1", D, 1, 10.0), line("a2", D + H, 2, 20.0)], 0)
    deliver(config, "b.csv", [line("b2", later, 2, 30.0)], 1)  # the watermark moves 40 days on
    deliver(config, "c.csv", [line("c3", later + H, 3, 40.0), line("c2", later + 2 * H, 2, 50.0)], 2)
    result = run_fraud_alerts(spark, config, available_now=True)
    assert (result["batches"], result["scored"]) == (3, 5)

    checkpoint = tmp_path / config.nearline.fraud_alerts.checkpoint_dir
    state = spark.read.format("statestore").load(str(checkpoint / "query")).collect()
    assert [r.key[0] for r in state] == [0]
    bucket = load_bucket(_state_value(state[0].value), 1)
    # Batch 3 started with the watermark 40 days on: card 1 (no trade since) and card 2's first two
    # transactions left the state; what a window of a transaction that is not late can reach stayed.
    tokens = {r.txn_id: r.card_token for r in alerts(spark, config).collect()}
    assert sorted(bucket["id"].tolist()) == [b"b2", b"c2", b"c3"]  # the state's strings: UTF-8 bytes
    assert bucket["cards"].tolist() == sorted({tokens["b2"], tokens["c3"]})
    per_card = {tokens["b2"]: 2, tokens["c3"]: 1}  # card 2: b2, c2; card 3: c3
    assert bucket["start"].tolist() == [0, per_card[bucket["cards"][0]], 3]
    c2 = alerts(spark, config).where(F.col("txn_id") == "c2").first()
    assert (c2.txn_count_30d, c2.amount_sum_30d) == (1, 30.0)  # b2 only: a2 is 40 days back

    # Another bucket count would move cards to other buckets (their windows silently empty): refused.
    moved = stream_config(tmp_path, "nearline.fraud_alerts.state_buckets=2")
    with pytest.raises(JobFailed, match="state_buckets=1, not 2"):
        run_fraud_alerts(spark, moved, available_now=True)


def _state_value(value) -> bytes:
    """The bucket's stored bytes in a ``statestore`` row (Spark nests the user state in its own struct)."""
    for field in value:
        if isinstance(field, (bytes, bytearray)):
            return bytes(field)
        if isinstance(field, tuple) and (found := _state_value(field)):
            return found
    return b""


def test_the_vectorized_window_sums_add_left_to_right_and_count_distinct_per_card_as_a_loop_does():
    import numpy as np

    rng = np.random.default_rng(3)
    codes = np.sort(rng.integers(0, 5, 300))  # events sorted by card
    amounts = rng.uniform(0.01, 1e6, 300) * rng.choice([1e-8, 1.0, 1e8], 300)  # rounding-sensitive
    merchants = rng.choice(np.array(["M1", "M2", "M3", "M4"]), 300)
    bounds = np.searchsorted(codes, np.arange(6))
    starts, ends = [], []
    for _ in range(200):  # ranges inside one card, some empty
        card = int(rng.integers(0, 5))
        lo, hi = int(bounds[card]), int(bounds[card + 1])
        s = int(rng.integers(lo, hi + 1))
        starts.append(s)
        ends.append(int(rng.integers(s, hi + 1)))
    start, end = np.array(starts), np.array(ends)
    sums = _sequential_sums(amounts, start, end)
    distinct = _first_in_window(codes, merchants, start, end)
    for j, (s, e) in enumerate(zip(starts, ends, strict=True)):
        assert sums[j] == sum(amounts[s:e].tolist(), 0.0)  # bit for bit, not approximately
        assert distinct[j] == len(set(merchants[s:e].tolist()))


def test_a_micro_batch_merges_only_its_cards_into_the_bucket_state_as_a_whole_bucket_merge_does():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)

    def batch(n: int, first_id: int, cards: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "txn_id": [f"t{first_id + i:04d}" for i in range(n)],
                "card_token": rng.choice(np.array(cards), n),
                "amount_eur": rng.uniform(1, 100, n).round(2),
                "merchant_id": rng.choice(np.array(["M1", "M2"]), n),
                "country": rng.choice(np.array(["DE", "FR"]), n),
                "lat": rng.choice(np.array([52.5, np.nan]), n),
                "lon": 13.4,
            }
        )

    def merge_all(saved: dict, rows: pd.DataFrame, ts: np.ndarray) -> dict:
        return _merged(saved, rows, np.arange(len(rows)), ts)

    empty = empty_bucket(1)
    first = batch(60, 0, ["c1", "c2", "c3", "c4"])
    first_ts = rng.integers(0, 100, 60).astype(np.int64)  # ties within and across cards
    saved = _pruned(merge_all(empty, first, first_ts), 0, 1)
    rows = batch(15, 100, ["c2", "c5"])  # one card of the state, one new card
    ts = rng.integers(0, 100, 15).astype(np.int64)
    new = np.arange(15)
    touched = _cards_of(saved, np.array(sorted(set(rows["card_token"].tolist())), dtype=str))
    want_ids = first["txn_id"][first["card_token"] == "c2"]
    assert sorted(i.decode() for i in set(touched["id"].tolist())) == sorted(want_ids)
    merged = _merged(touched, rows, new, ts)
    whole = merge_all(saved, rows, ts)
    for oldest in (0, 50):  # nothing pruned / the older half pruned
        got, want = _pruned(_replaced(saved, merged), oldest, 1), _pruned(whole, oldest, 1)
        assert got.keys() == want.keys()
        assert got["buckets"] == want["buckets"] == 1
        for k in got.keys() - {"buckets"}:
            assert np.array_equal(got[k], want[k], equal_nan=k in ("lat", "lon")), k


def test_a_state_value_written_with_unicode_columns_loads_as_the_same_strings_in_utf8_bytes():
    import pickle

    import numpy as np

    from lakeml.domains.banking.card_state import load_bucket

    # The layout before the byte columns: numpy unicode ids, merchants and countries (non-ASCII too).
    old = {**empty_bucket(1), "cards": np.array(["c1"]), "start": np.array([0, 2]),
           "t": np.array([1, 2]), "id": np.array(["t1", "tü2"]), "amount": np.array([1.0, 2.0]),
           "merchant": np.array(["M1", "Mé"]), "country": np.array(["DE", "FR"]),
           "lat": np.array([52.5, np.nan]), "lon": np.array([13.4, np.nan])}  # fmt: skip
    loaded = load_bucket(pickle.dumps(old, protocol=5), 1)
    for f in ("id", "merchant", "country"):
        assert loaded[f].dtype.kind == "S", f
        assert [v.decode("utf-8") for v in loaded[f].tolist()] == old[f].tolist(), f
    assert loaded["t"].tolist() == [1, 2] and loaded["cards"].tolist() == ["c1"]
