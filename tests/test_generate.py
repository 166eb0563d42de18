"""``lakeml generate``: layout, determinism, scaling, parseability, dirt rates and learnable signal.

One landing zone is generated per module (scale 1, 3 days) and then generated again through the
CLI into the same folder; every other check reads those files or the generators' typed frames.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from lakeml import cli, runlog
from lakeml.errors import UsageError
from lakeml.synthetic import banking, commerce, maintenance
from lakeml.synthetic.core import DAY_US, FEEDS, file_rows, make_window
from lakeml.synthetic.landing import feed_builders, generate_landing

END = date(2026, 11, 20)
DAYS = 3
SEED = 7
WINDOW = make_window(scale=1, days=DAYS, seed=SEED, end_date=END)
FILE_NAME = re.compile(r"^(?P<feed>[a-z]+)-(?P<day>\d{4}-\d{2}-\d{2})-(?P<n>\d{5})\.(?P<ext>jsonl|csv)$")
EXT = {
    "clickstream": "jsonl",
    "telemetry": "jsonl",
    "transactions": "csv",
    "chargebacks": "csv",
    "maintenance": "csv",
}
CLICK_FIELDS = (
    "event_id", "ts", "user_id", "session_id", "event_type", "item_id", "category", "price", "quantity",
    "rating", "device", "ip", "user_agent", "referrer", "app_version",
)  # fmt: skip
SENSORS = tuple(s.name for s in maintenance.SENSORS)
TELEMETRY_FIELDS = (
    "machine_id", "ts", "cycle", "setting_1", "setting_2", "setting_3", *SENSORS, "vibration_mm_s",
        "firmware",
)  # fmt: skip


@pytest.fixture(scope="module")
def lake_root(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """One landing zone (scale 1, 3 days) in ``<root>/landing``, where ``lakeml generate`` writes."""
    root = tmp_path_factory.mktemp("lake")
    counts = generate_landing(spark, str(root / "landing"), scale=1, days=DAYS, seed=SEED, end_date=END)
    return root, counts


@pytest.fixture(scope="module")
def landing(lake_root: tuple[Path, dict[str, int]]) -> tuple[Path, dict[str, int]]:
    """The landing folder of ``lake_root`` and the line counts ``generate_landing`` returned."""
    root, counts = lake_root
    return root / "landing", counts


@pytest.fixture(scope="module")
def cli_rerun(lake_root: tuple[Path, dict[str, int]]) -> dict[str, Any]:
    """``lakeml generate`` with the fixture's arguments into the same landing folder: a second run."""
    root, _ = lake_root
    before = file_digests(root / "landing")
    logged: list[dict[str, Any]] = []
    real_event = runlog.event

    def record(name: str, **fields: Any) -> dict[str, Any]:
        logged.append(real_event(name, **fields))
        return logged[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli.runlog, "event", record)
        args = ["generate", "--env", "test", "--conf", f"lakehouse.root={root}", "--scale", "1"]
        args += ["--days", str(DAYS), "--end-date", END.isoformat(), "--seed", str(SEED)]
        code = cli.main(args)
    return {"code": code, "before": before, "after": file_digests(root / "landing"), "logged": logged}


@pytest.fixture(scope="module")
def chargeback_truth(spark: SparkSession) -> Iterator[DataFrame]:
    """The typed chargeback rows behind the fixture's chargebacks feed (with ``is_fraud``, ``txn_ts_us``)."""
    frame = banking.chargebacks_frame(spark, WINDOW).cache()
    yield frame
    frame.unpersist()


def file_digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def window_days() -> set[str]:
    return {(END - timedelta(days=i)).isoformat() for i in range(DAYS)}


def file_date() -> F.Column:
    """The delivery date in a landing file's name."""
    return F.to_date(F.regexp_extract(F.col("_metadata.file_path"), r"-(\d{4}-\d{2}-\d{2})-\d{5}\.\w+$", 1))


def read_strings(spark: SparkSession, path: Path, fields: tuple[str, ...]) -> DataFrame:
    """A feed with every field read as text, so only lines that are not records at all are corrupt."""
    schema = ", ".join(f"`{f}` string" for f in [*fields, "_corrupt_record"])
    reader = spark.read.schema(schema).option("mode", "PERMISSIVE")
    df = (
        reader.json(str(path))
        if path.name in ("clickstream", "telemetry")
        else reader.option("header", True).csv(str(path))
    )
    return df.withColumn("file_date", file_date())


def shares(df: DataFrame, conditions: Mapping[str, str], **aggregates: F.Column) -> dict[str, Any]:
    """Share of rows meeting each SQL condition (null when no rows), plus extra aggregates: one Spark job."""
    columns = [
        F.avg(F.expr(f"CASE WHEN {c} THEN 1.0D ELSE 0.0D END")).alias(n) for n, c in conditions.items()
    ]
    return df.agg(*columns, *[a.alias(n) for n, a in aggregates.items()]).first().asDict()


# ----------------------------------------------------------------------------------------------
# layout, counts, determinism, scale


def test_layout_is_flat_per_feed_with_dated_numbered_files(landing: tuple[Path, dict[str, int]]) -> None:
    root, counts = landing
    assert sorted(p.name for p in root.iterdir()) == sorted(FEEDS), "no temporary folders are left behind"
    for feed in FEEDS:
        names = sorted(p.name for p in (root / feed).iterdir())
        matches = [FILE_NAME.match(n) for n in names]
        assert all(matches), names
        assert {(m["feed"], m["ext"]) for m in matches} == {(feed, EXT[feed])}
        assert {m["day"] for m in matches} == window_days(), f"{feed}: files on every day and only those"
    assert len(list((root / "clickstream").iterdir())) == 4 * DAYS, "6-hour delivery windows"
    assert len(list((root / "chargebacks").iterdir())) == DAYS, "one daily file"
    assert set(counts) == set(FEEDS)


def test_returned_counts_match_the_lines_in_the_files(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, counts = landing
    text = spark.read.text([str(root / feed) for feed in FEEDS])
    text = text.select(F.regexp_extract("_metadata.file_path", r"/([a-z]+)/[^/]+$", 1).alias("feed"))
    in_files = {r["feed"]: r["count"] for r in text.groupBy("feed").count().collect()}
    headers = {feed: len(list((root / feed).iterdir())) if EXT[feed] == "csv" else 0 for feed in FEEDS}
    assert in_files == {feed: counts[feed] + headers[feed] for feed in FEEDS}
    assert min(counts["clickstream"], counts["transactions"], counts["telemetry"]) > 5_000
    assert counts["chargebacks"] > 10 and counts["maintenance"] > 5


def test_same_arguments_give_byte_identical_files(cli_rerun: dict[str, Any]) -> None:
    """A second run with the same seed, scale, days and end date rewrites every file with the same bytes."""
    assert cli_rerun["code"] == 0
    assert len(cli_rerun["before"]) > 20, "the first run wrote the files"
    assert cli_rerun["after"] == cli_rerun["before"], "same names, same bytes, nothing added"


def test_generator_lines_are_the_file_lines_and_depend_on_the_seed(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, _ = landing

    def generated(seed: int) -> int:
        window = make_window(scale=1, days=DAYS, seed=seed, end_date=END)
        lines = file_rows(spark, feed_builders()["maintenance"](spark, window), window)
        return lines.agg(F.expr("bit_xor(xxhash64(line))")).first()[0]

    written = spark.read.text(str(root / "maintenance")).agg(F.expr("bit_xor(xxhash64(value))")).first()[0]
    assert generated(SEED) == written
    assert generated(SEED + 1) != written


def test_line_counts_grow_linearly_with_scale(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    _, scale_one = landing
    window = make_window(scale=2, days=DAYS, seed=SEED, end_date=END)
    for feed in ("clickstream", "transactions", "telemetry"):
        scale_two = (
            file_rows(spark, feed_builders()[feed](spark, window), window).filter("NOT _header").count()
        )
        assert 1.75 < scale_two / scale_one[feed] < 2.25, (feed, scale_one[feed], scale_two)


def test_window_arguments_are_validated() -> None:
    with pytest.raises(UsageError, match="scale"):
        make_window(scale=0, days=1, seed=1, end_date=END)
    with pytest.raises(UsageError, match="days"):
        make_window(scale=1, days=0, seed=1, end_date=END)
    with pytest.raises(UsageError, match="seed"):
        make_window(scale=1, days=1, seed=-1, end_date=END)
    window = make_window(scale=2, days=4, seed=1, end_date=END)
    assert (window.start, window.end, window.schema_change) == (date(2026, 11, 17), END, date(2026, 11, 19))


# ----------------------------------------------------------------------------------------------
# each feed parses, has its documented fields and its dirt at about the documented rates


def test_clickstream_parses_with_documented_fields_and_dirt(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, _ = landing
    keys = {k for path in (root / "clickstream").glob("*.jsonl") for k in json_keys(path)}
    assert keys == set(CLICK_FIELDS), "exactly the documented fields appear"
    df = read_strings(spark, root / "clickstream", CLICK_FIELDS)
    ok = "_corrupt_record IS NULL"
    event_day = "to_date(try_to_timestamp(ts))"  # device clocks are off by at most 3 h
    change = WINDOW.schema_change
    got = shares(
        df,
        {
            "malformed": "_corrupt_record IS NOT NULL",
            "missing": f"{ok} AND (user_id IS NULL OR ts IS NULL OR item_id IS NULL OR price IS NULL)",
            "comma_price": "price LIKE '%,%'",
            "epoch_ts": "ts RLIKE '^[0-9]+$'",
            "late": f"{ok} AND datediff(file_date, {event_day}) >= 1",
            "new_schema": f"{event_day} > DATE'{change}'",
            "old_schema": f"{event_day} < DATE'{change}' - 1",
            "new_with_app_version": f"{event_day} > DATE'{change}' AND app_version IS NOT NULL",
            "old_with_app_version": f"{event_day} < DATE'{change}' - 1 AND app_version IS NOT NULL",
        },
        lines=F.count(F.lit(1)),
        distinct_events=F.countDistinct("event_id"),
        offsets=F.collect_set(F.regexp_extract("ts", r"([+-]\d{2}:\d{2})$", 1)),
    )
    rules = commerce.RULES
    assert 0.4 * rules.dirt.malformed < got["malformed"] < 2.5 * rules.dirt.malformed
    assert 0.4 * rules.dirt.missing < got["missing"] < 2.5 * rules.dirt.missing
    assert got["comma_price"] > 0.0003 and got["epoch_ts"] > 0.0003, "some fields come with the wrong type"
    duplicates = 1 - got["distinct_events"] / got["lines"]
    assert 0.5 * rules.dirt.duplicate < duplicates < 2.5 * rules.dirt.duplicate
    assert 0.004 < got["late"] < 0.04, "about 1 % of sessions arrive days late"
    assert {"+01:00", "-05:00", "+05:30", "+09:00"} <= set(got["offsets"])
    # schema change: app_version on every event from the schema-change day on, on none before
    assert got["new_schema"] > 0.3 and got["old_schema"] > 0.0005
    assert got["new_with_app_version"] == pytest.approx(got["new_schema"])
    assert got["old_with_app_version"] == 0.0


def json_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keys |= set(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
    return keys


def test_clickstream_files_are_out_of_order_and_hold_late_events(
    landing: tuple[Path, dict[str, int]],
) -> None:
    root, _ = landing
    days_late = []
    for path in sorted((root / "clickstream").glob("*.jsonl")):
        delivered = date.fromisoformat(FILE_NAME.match(path.name)["day"])
        stamps = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                stamps.append(datetime.fromisoformat(json.loads(line)["ts"]).astimezone(UTC))
            except (ValueError, KeyError, TypeError):
                continue
        assert stamps != sorted(stamps), f"{path.name}: lines are in delivery order, not event order"
        days_late += [(delivered - s.date()).days for s in stamps]
    assert sum(d >= 1 for d in days_late) > 30, "late events carry a ts days before the file date"
    assert max(days_late) >= 2


def test_transactions_parse_with_valid_cards_and_dirt(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, _ = landing
    header = (root / "transactions" / f"transactions-{END}-00000.csv").read_text().splitlines()[0]
    assert header == ",".join(banking.TXN_COLUMNS)
    df = read_strings(spark, root / "transactions", banking.TXN_COLUMNS)
    # complete lines only: a truncated line can still parse, with its last fields missing
    complete = "_corrupt_record IS NULL AND txn_id LIKE 'tx%' AND card_present IN ('true', 'false')"
    ok = df.filter(complete).withColumn("pan", F.regexp_replace("card_number", " ", ""))
    got = shares(
        ok,
        {
            "known_channel": "channel IN ('pos', 'ecom', 'atm')",
            "bad_amount": "try_cast(amount AS DECIMAL(12, 2)) IS NULL",
            "spaced_pan": "card_number LIKE '% %'",
            "jpy_with_decimals": "currency = 'JPY' AND amount LIKE '%.%'",
        },
        accounts=F.countDistinct("account_id"),
        account_cards=F.countDistinct("account_id", "pan"),
        pans=F.collect_set("pan"),
    )
    assert got["known_channel"] > 0.99
    assert 0.001 < got["bad_amount"] < 0.015, "missing, N/A and decimal-comma amounts"
    assert got["spaced_pan"] > 0.002, "some PANs are written in groups of four"
    assert got["jpy_with_decimals"] == 0.0
    assert got["accounts"] == got["account_cards"], "one card per account"
    assert all(len(p) == 16 and luhn_valid(p) for p in got["pans"] if p)


def luhn_valid(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_chargebacks_follow_their_transactions(
    spark: SparkSession, landing: tuple[Path, dict[str, int]], chargeback_truth: DataFrame
) -> None:
    root, _ = landing
    truth = chargeback_truth.agg(
        F.min(F.col("reported_us") - F.col("txn_ts_us")).alias("min_delay"),
        F.count(F.when(F.col("kind") == "reversal", 1)).alias("reversals"),
        F.count(F.when((F.col("kind") == "chargeback") & ~F.col("is_fraud"), 1)).alias("false"),
    ).first()
    assert truth["min_delay"] >= 2 * DAY_US, "filed days to weeks after the transaction"
    assert truth["reversals"] > 0 and truth["false"] > 0, "some reversed, a few false chargebacks"
    # in the files: every chargeback that joins a delivered transaction is reported after it
    cbs = read_strings(spark, root / "chargebacks", banking.CHARGEBACK_COLUMNS)
    txns = (
        read_strings(spark, root / "transactions", banking.TXN_COLUMNS)
        .select("txn_id", "ts")
        .dropDuplicates(["txn_id"])
    )
    joined = cbs.join(txns, "txn_id").select(
        F.expr("try_to_timestamp(reported_at)").alias("reported"), F.expr("try_to_timestamp(ts)").alias("ts")
    )
    got = joined.agg(
        F.count(F.when(F.col("reported").isNotNull() & F.col("ts").isNotNull(), 1)).alias("pairs"),
        F.count(F.when(F.col("reported") <= F.col("ts"), 1)).alias("too_early"),
    ).first()
    assert got["pairs"] > 0 and got["too_early"] == 0
    codes = {r[0] for r in cbs.select("reason_code").distinct().collect()} - {None}
    assert {"10.3", "10.4"} <= codes <= {"10.3", "10.4", "13.1", "13.3", "REVERSED"}


def test_fraud_rate_patterns_and_chargeback_coverage(
    spark: SparkSession, chargeback_truth: DataFrame
) -> None:
    in_window = f"ts_us >= {WINDOW.first_day * DAY_US} AND ts_us < {(WINDOW.last_day + 1) * DAY_US}"
    rate = shares(banking.transactions_frame(spark, WINDOW).filter(in_window), {"fraud": "is_fraud"})["fraud"]
    assert 0.001 <= rate <= 0.01, rate
    # over a longer span every pattern shows up, and most (not all) fraud is charged back
    first = banking.fraud_first_day(WINDOW)
    fraud = banking.fraud_transactions(spark, SEED, 1, first, WINDOW.last_day).filter("is_fraud")
    charged = chargeback_truth.filter("kind = 'chargeback'").select("txn_id", F.lit(True).alias("charged"))
    got = (
        fraud.join(charged, "txn_id", "left")
        .agg(
            F.collect_set("pattern").alias("patterns"),
            F.avg(F.coalesce(F.col("charged"), F.lit(False)).cast("double")).alias("covered"),
            F.max(F.when(F.col("pattern") == "card_testing", F.col("amount_eur"))).alias("max_card_test"),
            F.min(F.when(F.col("pattern") == "card_testing", F.col("amount_eur"))).alias("min_card_test"),
        )
        .first()
    )
    assert set(got["patterns"]) == {
        "card_testing",
        "impossible_travel",
        "night_risky_mcc",
        "compromised_merchant",
    }
    assert 0.5 < got["covered"] < 0.95, got["covered"]
    assert got["min_card_test"] < 5 <= got["max_card_test"], "small test payments, then big ones"


def test_telemetry_parses_renames_a_field_and_drifts_toward_failure(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, _ = landing
    df = read_strings(spark, root / "telemetry", TELEMETRY_FIELDS).withColumn(
        "event_day", F.expr("to_date(try_to_timestamp(ts))")
    )
    change = WINDOW.schema_change
    got = shares(
        df,
        {
            "malformed": "_corrupt_record IS NOT NULL",
            "after": f"event_day > DATE'{change}'",
            "after_renamed": f"event_day > DATE'{change}' AND vibration_mm_s IS NOT NULL AND vibration IS "
                             "NULL",
            "before": f"event_day < DATE'{change}'",
            "before_old_name": f"event_day < DATE'{change}' AND vibration IS NOT NULL AND vibration_mm_s IS "
                               "NULL",
            "text_values": "temperature IN ('NaN', 'ERR') OR pressure IN ('NaN', 'ERR')",
        },
    )
    assert got["malformed"] < 3 * maintenance.RULES.telemetry_dirt.malformed
    assert got["after_renamed"] > 0.97 * got["after"] and got["after"] > 0.2
    assert got["before_old_name"] > 0.97 * got["before"] and got["before"] > 0.2
    assert got["text_values"] > 0, "some sensor values come as strings"
    # C-MAPSS-like drift: per regime, normalised vibration rises (and flow falls) with cycles since reset
    readings = df.filter("_corrupt_record IS NULL").select(
        F.col("cycle").cast("double").alias("cycle"),
        F.round(F.expr("try_cast(setting_1 AS DOUBLE)"), 1).alias("regime"),
        F.expr("coalesce(try_cast(vibration AS DOUBLE), try_cast(vibration_mm_s AS DOUBLE))").alias("vib"),
        F.expr("try_cast(flow AS DOUBLE)").alias("flow"),
        F.expr("try_cast(voltage AS DOUBLE)").alias("voltage"),
    )
    readings = readings.dropna().filter("NOT isnan(vib) AND NOT isnan(flow) AND NOT isnan(voltage)")
    by_regime = Window.partitionBy("regime")
    for c in ("vib", "flow", "voltage"):
        readings = readings.withColumn(c, (F.col(c) - F.avg(c).over(by_regime)) / F.stddev(c).over(by_regime))
    corr = readings.agg(*[F.corr(c, "cycle").alias(c) for c in ("vib", "flow", "voltage")]).first()
    assert corr["vib"] > 0.3 and corr["flow"] < -0.3, corr
    assert abs(corr["voltage"]) < 0.15, "voltage carries no signal"


def test_telemetry_ground_truth_sensor_tracks_cycles_to_failure(spark: SparkSession) -> None:
    truth = maintenance.telemetry_frame(spark, WINDOW).filter("rul_cycles IS NOT NULL")
    got = truth.agg(
        F.corr("vibration", "rul_cycles").alias("vibration"),
        F.corr("health", "rul_cycles").alias("health"),
        F.max("health").alias("max_health"),
        F.min("health").alias("min_health"),
    ).first()
    assert got["vibration"] < -0.5 and got["health"] < -0.8
    assert got["min_health"] > 0 and got["max_health"] <= 1.0


def test_maintenance_log_matches_the_telemetry(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, _ = landing
    log = read_strings(spark, root / "maintenance", maintenance.MAINTENANCE_COLUMNS)
    log = log.filter(r"_corrupt_record IS NULL AND ts RLIKE 'T.*[+-][0-9]{2}:[0-9]{2}$'").select(
        "machine_id", F.lower("kind").alias("kind"), "component", F.expr("try_to_timestamp(ts)").alias("at")
    )
    kinds = log.agg(
        F.collect_set("kind"), F.collect_set(F.when(F.col("kind") == "failure", F.col("component")))
    ).first()
    assert set(kinds[0]) == {"failure", "repair", "preventive"}
    assert set(kinds[1]) <= {"bearing", "pump", "motor", "seal"}
    # just before a logged failure a machine is deep into its life; just after a repair it starts again
    telemetry = read_strings(spark, root / "telemetry", TELEMETRY_FIELDS).filter("_corrupt_record IS NULL")
    telemetry = telemetry.select(
        "machine_id",
        F.col("cycle").cast("int").alias("cycle"),
        F.expr("try_to_timestamp(ts)").alias("read_at"),
    )
    near = log.join(telemetry, "machine_id").filter(
        "(kind = 'failure' AND read_at BETWEEN at - INTERVAL 60 MINUTES AND at - INTERVAL 15 MINUTES)"
        " OR (kind = 'repair' AND read_at BETWEEN at + INTERVAL 15 MINUTES AND at + INTERVAL 60 MINUTES)"
        " OR (kind = 'preventive' AND read_at BETWEEN at + INTERVAL 255 MINUTES AND at + INTERVAL 300 "
        "MINUTES)"
    )
    got = near.groupBy("kind").agg(F.min("cycle").alias("lo"), F.max("cycle").alias("hi")).collect()
    cycles = {r["kind"]: (r["lo"], r["hi"]) for r in got}
    assert cycles["failure"][0] > 100, "a life lasts at least 2.5 days of 10-minute cycles"
    assert cycles["repair"][1] <= 7, "health and cycle reset after a repair"
    assert cycles["preventive"][1] <= 7, "and after a 4-hour overhaul"


def test_users_have_category_tastes_a_recommender_can_learn(
    spark: SparkSession, landing: tuple[Path, dict[str, int]]
) -> None:
    root, _ = landing
    events = read_strings(spark, root / "clickstream", CLICK_FIELDS)
    events = events.filter("_corrupt_record IS NULL AND user_id LIKE 'u-%' AND category IS NOT NULL")
    per_user = events.groupBy("user_id", "category").count()
    ranked = per_user.withColumn(
        "rank", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("count"), "category"))
    )
    users = ranked.groupBy("user_id").agg(
        F.sum(F.when(F.col("rank") <= 2, F.col("count"))).alias("top2"), F.sum("count").alias("n")
    )
    personal = users.filter("n >= 15").agg(F.avg(F.col("top2") / F.col("n"))).first()[0]
    by_category = sorted(
        (r["n"] for r in per_user.groupBy("category").agg(F.sum("count").alias("n")).collect()), reverse=True
    )
    popular = sum(by_category[:2]) / sum(by_category)
    assert personal > 0.6 and popular < 0.4, (
        "a user's two favourite categories beat the two most popular ones"
    )


# ----------------------------------------------------------------------------------------------
# the command line


def test_cli_generate_end_to_end(cli_rerun: dict[str, Any], landing: tuple[Path, dict[str, int]]) -> None:
    _, counts = landing
    assert cli_rerun["code"] == 0
    end = [e for e in cli_rerun["logged"] if e["event"] == "generate_end"]
    assert len(end) == 1, "one structured line per run"
    assert end[0]["lines"] == counts, "the same line counts as the library call"
    assert (end[0]["seed"], end[0]["days"], end[0]["end_date"]) == (SEED, DAYS, END.isoformat())
    assert end[0]["seconds"] > 0 and set(end[0]["feed_seconds"]) == set(FEEDS)
    assert end[0]["files"]["clickstream"] == 4 * DAYS


def test_cli_generate_takes_defaults_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, object] = {}

    def fake_run(spark: SparkSession, landing_dir: str, **kwargs: object) -> object:
        captured.update(kwargs, landing_dir=landing_dir)
        raise UsageError("stop here")

    monkeypatch.setattr("lakeml.synthetic.landing.run_generation", fake_run)
    args = ["generate", "--env", "test", "--conf", f"lakehouse.root={tmp_path}", "--days", "2"]
    args += [
        "--conf",
        "generate.scale=3",
        "--conf",
        "generate.seed=5",
        "--conf",
        'generate.end_date="2026-01-31"',
    ]
    assert cli.main(args) == 2
    expected = {
        "landing_dir": str(tmp_path / "landing"),
        "scale": 3,
        "days": 2,
        "seed": 5,
        "end_date": date(2026, 1, 31),
    }
    assert captured == expected


@pytest.mark.parametrize(
    "extra",
    [
        ["--scale", "0"],
        ["--days", "-1"],
        ["--end-date", "2026-02-30"],
        ["--seed", "x"],
        ["--conf", "generate.bogus=1"],
    ],
)
def test_cli_generate_rejects_bad_arguments(tmp_path: Path, extra: list[str]) -> None:
    assert cli.main(["generate", "--env", "test", "--conf", f"lakehouse.root={tmp_path}", *extra]) == 2
    assert not (tmp_path / "landing").exists()
