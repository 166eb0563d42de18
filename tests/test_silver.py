"""Bronze → silver: parsing, quarantine with reasons, dedup, accounting, PII, quality gates, reruns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import load_config
from lakeml.domains.banking.silver import CHARGEBACKS, TRANSACTION_FIELDS, TRANSACTIONS
from lakeml.domains.commerce.silver import CLICKSTREAM
from lakeml.domains.maintenance.silver import MAINTENANCE, TELEMETRY
from lakeml.errors import ConfigError, JobFailed
from lakeml.ingest.bronze import load_feed_to_bronze
from lakeml.ingest.silver import SilverFeed, classify_rows, flag_repeated_keys, load_bronze_to_silver
from lakeml.lakehouse import Lakehouse
from lakeml.steps import DateRange, running_as

RUN_DATE = dt.date(2026, 11, 20)


def tolerant_of_quarantine(config):
    """The config with quarantine-rate checks lifted: these tests feed mostly bad lines on purpose."""
    checks = {
        feed: tuple(dataclasses.replace(c, max_value=1.0) if c.check == "quarantine_rate" else c for c in cs)
        for feed, cs in config.silver.checks.items()
    }
    return dataclasses.replace(config, silver=dataclasses.replace(config.silver, checks=checks))


@pytest.fixture
def lake_config(tmp_path):
    return tolerant_of_quarantine(load_config("test", [f"lakehouse.root={tmp_path / 'lake'}"]))


def deliver(config, feed: str, name: str, lines: list[str | bytes]) -> Path:
    folder = Path(config.landing_path()) / feed
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def load_silver(spark, config, feed: SilverFeed, job: str = "test", run_id: str = "r"):
    """The silver step for ``feed`` on RUN_DATE, run as ``job``."""
    with running_as(job, run_id):
        return load_bronze_to_silver(spark, config, DateRange.single(RUN_DATE), feed)


def run_silver(spark, config, feed: SilverFeed):
    load_feed_to_bronze(spark, config, feed.name)
    return load_silver(spark, config, feed, "test.build_silver", uuid.uuid4().hex)


def tables(spark, config, feed: str):
    lake = Lakehouse(spark, config)
    return (
        lake.table("silver", feed),
        lake.table("ops", "quarantine"),
        lake.table("ops", "silver_batches"),
        lake.table("ops", "dq_results"),
    )


def quarantined(spark, config, feed: str):
    _, quarantine, _, _ = tables(spark, config, feed)
    return quarantine.read(where=[("feed", "=", feed)]).select("raw_record", "reason")


def click(event_id: str, **fields) -> str:
    event = {
        "event_id": event_id,
        "ts": "2026-11-20T14:03:07.123+01:00",
        "user_id": "u-0000042",
        "session_id": "s-1",
        "event_type": "view",
        "item_id": "i-000123",
        "category": "Books",
        "price": 12.5,
        "device": "mobile",
        "ip": "10.1.2.3",
        "user_agent": "ua",
        "referrer": "",
    }
    event.update(fields)
    return json.dumps({k: v for k, v in event.items() if v is not None})


def token(text: str) -> str:
    return hmac.new(os.environ["LAKEML_PII_KEY"].encode(), text.encode(), hashlib.sha256).hexdigest()


def test_clickstream_bad_input_is_quarantined_with_reasons_and_the_batch_balances(spark, lake_config):
    truncated = click("e-trunc")[:30]
    bad = {
        truncated: "malformed JSON (not one complete object)",
        "<html><body>502 Bad Gateway</body></html>": "malformed JSON (not one complete object)",
        "[1, 2, 3]": "malformed JSON (not one complete object)",
        "": "empty line",
        click("e-nots", ts=None): "missing ts",
        click("e-epoch", ts=1763647387123): "invalid ts: not ISO-8601 with a zone offset",
        click("e-local", ts="2026-11-20 14:03"): "invalid ts: not ISO-8601 with a zone offset",
        click("e-1970", ts="1970-01-01T00:00:00.000Z"): "invalid ts: before 2000-01-01",
        click("e-future", ts="2099-01-01T00:00:00.000Z"): "invalid ts: more than 24 h after ingestion",
        click("e-uid", user_id=42): "invalid user_id: not u-<digits>",
        click("e-type", event_type="teleport"): "unknown event_type: teleport",
        click("e-nan", price="NaN"): "invalid price: not a decimal",
        click("e-neg", price=-1.0): "invalid price: negative",
        click("e-huge", price=1e12): "invalid price: above 100000",
        click(
            "e-qty", event_type="purchase"
        ): "invalid quantity: cart and purchase events need a positive integer",
        click("e-rate", event_type="rating", rating=9): "invalid rating: not 1-5",
    }
    good = [
        click("e-1"),
        "\ufeff" + click("e-bom"),  # a byte-order mark is stripped, the event loads
        click("e-comma", price="12,99"),  # decimal comma is standardized
        click("e-buy", event_type="PURCHASE", quantity=2),
        click("e-star", event_type="rating", rating=5, app_version="2.1.0"),
        click("e-1"),  # duplicate delivery in the same batch
    ]
    deliver(lake_config, "clickstream", "clickstream-2026-11-20-00000.jsonl", good + list(bad))
    deliver(
        lake_config,
        "clickstream",
        "clickstream-2026-11-20-00001.jsonl",
        [b'{"event_id": "e-\xff\xfe", "x": 1}'],
    )
    deliver(lake_config, "clickstream", "clickstream-2026-11-20-00002.jsonl", [])  # an empty file
    deliver(lake_config, "clickstream", "clickstream-2026-11-20-00003.jsonl", [b"\x89PNG\r\n\x1a\n\x00\x00"])

    load = run_silver(spark, lake_config, CLICKSTREAM)

    silver, _, job_runs, dq_results = tables(spark, lake_config, "clickstream")
    got = silver.read().select(
        "event_id", "event_type", "price", "quantity", "rating", "app_version", "category"
    )
    expected = spark.createDataFrame(
        [
            ("e-1", "view", Decimal("12.50"), None, None, None, "books"),
            ("e-bom", "view", Decimal("12.50"), None, None, None, "books"),
            ("e-comma", "view", Decimal("12.99"), None, None, None, "books"),
            ("e-buy", "purchase", Decimal("12.50"), 2, None, None, "books"),
            ("e-star", "rating", Decimal("12.50"), None, 5, "2.1.0", "books"),
        ],
        "event_id string, event_type string, price decimal(12,2), quantity int, rating int, app_version "
        "string, category string",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    first = silver.read().where(F.col("event_id") == "e-1").first()
    assert first.ts == dt.datetime(2026, 11, 20, 13, 3, 7, 123000) and first.utc_offset_minutes == 60
    assert first.ip_token == token("10.1.2.3")

    expected_quarantine = [(line, reason) for line, reason in bad.items()] + [
        ('{"event_id": "e-\ufffd\ufffd", "x": 1}', "line is not valid UTF-8"),
        ("\ufffdPNG", "line is not valid UTF-8"),
        ("\x1a", "malformed JSON (not one complete object)"),
        ("\x00\x00", "line holds NUL bytes"),
    ]
    assertDataFrameEqual(
        quarantined(spark, lake_config, "clickstream"),
        spark.createDataFrame(expected_quarantine, "raw_record string, reason string"),
        checkRowOrder=False,
    )
    assert load.counts == {"header": 0, "quarantined": len(expected_quarantine), "duplicate": 1, "loaded": 5}
    run = job_runs.read().first()
    assert (run.rows_in, run.rows_loaded, run.rows_duplicate, run.rows_quarantined, run.status) == (
        len(good) + len(bad) + 4, 5, 1, len(expected_quarantine), "ok",
    )  # fmt: skip
    assert run.rows_in == run.rows_loaded + run.rows_duplicate + run.rows_quarantined + run.rows_header
    checks = {(r.check, r.target): (r.passed, r.failed_rows, r.observed) for r in dq_results.read().collect()}
    assert checks[("unique", "event_id")] == (True, 0, None)
    assert checks[("quarantine_rate", "batch")] == (
        True,
        None,
        f"{len(expected_quarantine) / run.rows_in:.6f}",
    )


def test_a_quality_error_stops_the_batch_and_a_rerun_replays_it_exactly(spark, tmp_path):
    strict = load_config(
        "test",
        [
            f"lakehouse.root={tmp_path / 'lake'}",
            "silver.checks.maintenance="
            "[{check: accepted_values, column: kind, values: [failure], level: error}]",
        ],
    )
    deliver(
        strict,
        "maintenance",
        "maintenance-2026-11-20-00000.csv",
        [
            "machine_id,ts,kind,component",
            "MCH-00001,2026-11-20T10:00:00+09:00,failure,bearing",
            "MCH-00001,2026-11-20T20:00:00+09:00,Repair,bearing",
            "MCH-00002,2026-11-20 14:00,preventive,all",
        ],
    )
    with pytest.raises(
        JobFailed, match=r"accepted_values\(kind\) 1 failing rows of 2; the batch was not committed"
    ):
        run_silver(spark, strict, MAINTENANCE)
    silver, quarantine, job_runs, dq_results = tables(spark, strict, "maintenance")
    assert silver.read().count() == 0
    assert [r.status for r in job_runs.read().collect()] == ["failed"]
    assert [(r.check, r.passed) for r in dq_results.read().collect()] == [("accepted_values", False)]
    assert quarantine.read().count() == 1

    # More data arrives, and the check is fixed: the failed range is replayed on its own first.
    relaxed = tolerant_of_quarantine(load_config("test", [f"lakehouse.root={tmp_path / 'lake'}"]))
    deliver(
        relaxed,
        "maintenance",
        "maintenance-2026-11-21-00000.csv",
        [
            "machine_id,ts,kind,component",
            "MCH-00003,2026-11-21T08:00:00Z,preventive,",
            "MCH-00004,2026-11-21T08:00:00Z,explode,x",
        ],
    )
    first = load_silver(spark, relaxed, MAINTENANCE, run_id="r2")
    assert first.counts == {"header": 1, "quarantined": 1, "duplicate": 0, "loaded": 2}
    second = run_silver(spark, relaxed, MAINTENANCE)
    assert second.counts == {"header": 1, "quarantined": 1, "duplicate": 0, "loaded": 1}
    got = silver.read().select("machine_id", "ts", "kind", "component", "utc_offset_minutes")
    expected = spark.createDataFrame(
        [
            ("MCH-00001", dt.datetime(2026, 11, 20, 1), "failure", "bearing", 540),
            ("MCH-00001", dt.datetime(2026, 11, 20, 11), "repair", "bearing", 540),
            ("MCH-00003", dt.datetime(2026, 11, 21, 8), "preventive", None, 0),
        ],
        "machine_id string, ts timestamp, kind string, component string, utc_offset_minutes int",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    assertDataFrameEqual(
        quarantine.read().select("raw_record", "reason"),
        spark.createDataFrame(
            [
                ("MCH-00002,2026-11-20 14:00,preventive,all", "invalid ts: not ISO-8601 with a zone offset"),
                ("MCH-00004,2026-11-21T08:00:00Z,explode,x", "unknown kind: explode"),
            ],
            "raw_record string, reason string",
        ),
        checkRowOrder=False,
    )
    assert sorted(r.status for r in job_runs.read().collect()) == ["failed", "ok", "ok"]


PAN = "4532011234567895"  # Luhn-valid


def transaction(txn_id: str, **fields) -> str:
    row = {
        "txn_id": txn_id,
        "ts": "2026-11-20T13:45:12.123Z",
        "card_number": PAN,
        "account_id": "A00000001",
        "merchant_id": "M00000001",
        "merchant_category": "5411",
        "amount": "12.50",
        "currency": "EUR",
        "channel": "pos",
        "country": "DE",
        "lat": "52.5200",
        "lon": "13.4050",
        "card_present": "true",
    }
    row.update(fields)
    return ",".join(row[f] for f in TRANSACTION_FIELDS)


def test_transactions_tokenize_pans_standardize_money_and_quarantine_bad_rows(spark, lake_config):
    header = ",".join(TRANSACTION_FIELDS)
    bad = {
        transaction("tx-neg", amount="-5.00"): "invalid amount: negative",
        transaction("tx-na", amount="N/A"): "invalid amount: not a decimal",
        transaction("tx-cur", currency="XXX"): "unknown currency: XXX",
        transaction("tx-huge", amount="99999999999.00"): "invalid amount: above 1e+06 EUR",
        transaction(
            "tx-luhn", card_number="4532011234567890"
        ): "invalid card_number: not a 16-digit Luhn-valid PAN",
        transaction("tx-ts", ts="20/11/2026 13:45:12"): "invalid ts: not ISO-8601 with a zone offset",
        transaction("tx-chan", channel="teleport"): "unknown channel: teleport",
        transaction("tx-mid", merchant_id=""): "missing merchant_id",
        transaction("tx-loc", lon=""): "invalid location: lat and lon must come together",
        transaction("tx-short")[:40]: "malformed CSV (expected 13 fields)",
        transaction("tx-long") + ",extra": "malformed CSV (expected 13 fields)",
        "txn_id,ts,card,amount": f"unexpected CSV header (expected {header})",
    }
    deliver(
        lake_config,
        "transactions",
        "transactions-2026-11-20-00000.csv",
        [
            header,
            transaction("tx-1", card_number=PAN),
            transaction(
                "tx-2", card_number="4532 0112 3456 7895", amount='"12,50"'
            ),  # grouped PAN, decimal comma
            transaction(
                "tx-3", amount="1600", currency="jpy", channel="ECOM", card_present="false", lat="", lon=""
            ),
            *bad,
        ],
    )
    load = run_silver(spark, lake_config, TRANSACTIONS)
    assert load.counts == {"header": 1, "quarantined": len(bad), "duplicate": 0, "loaded": 3}
    silver, _, _, _ = tables(spark, lake_config, "transactions")
    got = silver.read().select(
        "txn_id",
        "card_token",
        "card_last4",
        "amount",
        "currency",
        "amount_eur",
        "channel",
        "lat",
        "card_present",
    )
    expected = spark.createDataFrame(
        [
            ("tx-1", token(PAN), "7895", Decimal("12.50"), "EUR", Decimal("12.50"), "pos", 52.52, True),
            ("tx-2", token(PAN), "7895", Decimal("12.50"), "EUR", Decimal("12.50"), "pos", 52.52, True),
            ("tx-3", token(PAN), "7895", Decimal("1600.00"), "JPY", Decimal("10.00"), "ecom", None, False),
        ],
        "txn_id string, card_token string, card_last4 string, amount decimal(18,2), currency string, "
        "amount_eur decimal(18,2), channel string, lat double, card_present boolean",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    # No silver column holds the card number in clear, in any format.
    text = silver.read().select(
        F.concat_ws("|", *[F.col(c).cast("string") for c in silver.read().columns]).alias("t")
    )
    assert text.where(F.col("t").contains(PAN) | F.col("t").contains("4532 0112")).count() == 0
    # Quarantine keeps the line as bronze loaded it: the valid PAN as its token, the rest as delivered.
    as_loaded = f"pan:{token(PAN)}:16:7895"
    assertDataFrameEqual(
        quarantined(spark, lake_config, "transactions"),
        spark.createDataFrame(
            [(line.replace(PAN, as_loaded), reason) for line, reason in bad.items()],
            "raw_record string, reason string",
        ),
        checkRowOrder=False,
    )


def test_missing_pii_key_is_a_clear_error_and_writes_nothing(spark, lake_config, monkeypatch):
    deliver(lake_config, "transactions", "transactions-2026-11-20-00000.csv", [",".join(TRANSACTION_FIELDS)])
    load_feed_to_bronze(spark, lake_config, "transactions")
    monkeypatch.delenv("LAKEML_PII_KEY")
    with pytest.raises(ConfigError, match="LAKEML_PII_KEY .*silver.pii_key_env.* no default key"):
        load_silver(spark, lake_config, TRANSACTIONS)
    silver, quarantine, _, _ = tables(spark, lake_config, "transactions")
    assert not silver.exists() and not quarantine.exists()


def test_duplicates_across_batches_late_events_and_reruns(spark, lake_config):
    deliver(lake_config, "clickstream", "clickstream-2026-11-20-00000.jsonl", [click("e-1"), click("e-2")])
    assert run_silver(spark, lake_config, CLICKSTREAM).counts["loaded"] == 2
    silver, quarantine, job_runs, dq_results = tables(spark, lake_config, "clickstream")
    versions = [t.version() for t in (silver, quarantine, job_runs, dq_results)]
    again = run_silver(spark, lake_config, CLICKSTREAM)
    assert again.rows_in == 0
    assert [t.version() for t in (silver, quarantine, job_runs, dq_results)] == versions

    late = click("e-late", ts="2026-11-17T23:30:00.000-05:00")  # UTC 2026-11-18 04:30
    deliver(
        lake_config, "clickstream", "clickstream-2026-11-21-00000.jsonl", [click("e-2"), late, click("e-3")]
    )
    load = run_silver(spark, lake_config, CLICKSTREAM)
    assert load.counts == {"header": 0, "quarantined": 0, "duplicate": 1, "loaded": 2}
    got = silver.read().select("event_id", "event_date")
    expected = spark.createDataFrame(
        [("e-1", RUN_DATE), ("e-2", RUN_DATE), ("e-3", RUN_DATE), ("e-late", dt.date(2026, 11, 18))],
        "event_id string, event_date date",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    late_files = silver.files(where=[("event_date", "=", dt.date(2026, 11, 18))])
    assert [f.partition_values["event_date"] for f in late_files] == [dt.date(2026, 11, 18)]
    assert sum(f.num_records or 0 for f in late_files) == 1
    runs = job_runs.read().orderBy("bronze_to_version").collect()
    assert [(r.rows_in, r.rows_loaded, r.rows_duplicate) for r in runs] == [(2, 2, 0), (3, 2, 1)]
    assert runs[1].bronze_from_version == runs[0].bronze_to_version


def test_classify_rows_keeps_the_first_valid_delivery_per_key_and_date(spark):
    t0 = dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)
    d1, d2 = RUN_DATE, RUN_DATE + dt.timedelta(days=1)
    later = t0 + dt.timedelta(hours=1)
    # (key, event_date, reject reason, is header, ingested at, source file, payload) → expected status
    cases = [
        (("k-single", d1, None, False, t0, "a", "x"), "loaded"),
        (("k-twice", d1, None, False, later, "a", "x"), "duplicate"),  # delivered again, later
        (("k-twice", d1, None, False, t0, "b", "x"), "loaded"),
        (("k-in-silver", d1, None, False, t0, "a", "x"), "duplicate"),  # a batch before loaded it
        (("k-in-silver", d1, None, False, later, "a", "x"), "duplicate"),
        (("k-bad-copy", d1, "invalid price", False, t0, "a", "x"), "quarantined"),  # earlier, but invalid
        (("k-bad-copy", d1, None, False, later, "a", "x"), "loaded"),
        (("k-same-time", d1, None, False, t0, "b", "x"), "duplicate"),  # ties: the smaller file name wins
        (("k-same-time", d1, None, False, t0, "a", "x"), "loaded"),
        (("k-equal-copies", d1, None, False, t0, "a", "x"), "duplicate"),  # either one: the same row
        (("k-equal-copies", d1, None, False, t0, "a", "x"), "loaded"),
        (("k-two-days", d1, None, False, t0, "a", "x"), "loaded"),  # the key is unique within a date
        (("k-two-days", d2, None, False, later, "a", "x"), "loaded"),
        ((None, None, "missing event_id", False, t0, "a", "x"), "quarantined"),
        ((None, None, "missing event_id", False, t0, "a", "x"), "quarantined"),
        (("event_id", None, None, True, t0, "a", "x"), "header"),
    ]
    columns = ("event_id string, event_date date, _reject_reason string, _is_header boolean, _ingested_at "
        "timestamp, _source_file string, payload string")
    parsed = spark.createDataFrame([row for row, _ in cases], columns).select(
        "*", F.lit(None).cast("string").alias("value"), F.lit(None).cast("binary").alias("raw_bytes")
    )
    existing = spark.createDataFrame(
        [("k-in-silver", d1), ("k-only-in-silver", d1), ("k-two-days", d2 + dt.timedelta(days=1))],
        "event_id string, event_date date",
    )
    got = classify_rows(parsed, ["event_id"], existing).transform(
        lambda df: flag_repeated_keys(df, ["event_id"])
    )
    # Only a loaded key that an earlier date's loaded row has is a repeat (what unique(event_id) counts).
    expected = spark.createDataFrame(
        [(*row, status, row[:2] == ("k-two-days", d2)) for row, status in cases],
        f"{columns}, _status string, _key_repeated boolean",
    )
    assertDataFrameEqual(got.select(*expected.columns), expected, checkRowOrder=False)


def test_a_key_loaded_on_two_dates_fails_the_unique_check_which_must_name_the_key(spark, lake_config):
    deliver(
        lake_config,
        "clickstream",
        "clicks-2026-11-20-00000.jsonl",
        [
            click("e-1"),
            click("e-1", ts="2026-11-19T22:00:00Z"),  # the same id on another date: both load
            click("e-2"),
        ],
    )
    with pytest.raises(
        JobFailed, match=r"unique\(event_id\) 1 failing rows of 3; the batch was not committed"
    ):
        run_silver(spark, lake_config, CLICKSTREAM)
    silver, _, job_runs, _ = tables(spark, lake_config, "clickstream")
    assert silver.read().count() == 0
    assert [(r.status, r.rows_loaded) for r in job_runs.read().collect()] == [("failed", 3)]
    # No silver file is left behind either: the staged files were dropped, not just left uncommitted.
    assert not list(Path(silver.uri).glob("event_date=*/*.parquet"))

    wrong = dataclasses.replace(
        lake_config,
        silver=dataclasses.replace(
            lake_config.silver,
            checks={
                "clickstream": (
                    dataclasses.replace(lake_config.silver.checks["clickstream"][0], columns=("user_id",)),
                )
            },
        ),
    )
    with pytest.raises(ConfigError, match=r"unique\(user_id\) must name the business key \(event_id\)"):
        run_silver(spark, wrong, CLICKSTREAM)


def test_telemetry_schema_change_and_sensor_values(spark, lake_config):
    def reading(machine: str, ts: str, **sensors) -> str:
        base = {
            "machine_id": machine,
            "ts": ts,
            "cycle": 7,
            "setting_1": 0.5,
            "setting_2": 0.9,
            "setting_3": 100,
        }
        return json.dumps({**base, **sensors})

    deliver(
        lake_config,
        "telemetry",
        "telemetry-2026-11-20-00000.jsonl",
        [
            reading("M1", "2026-11-20T10:00:00.000+01:00", vibration=4.5, temperature=80.0, firmware="3.1.0"),
            reading(
                "M1",
                "2026-11-20T10:10:00.000+01:00",
                vibration_mm_s=4.6,
                temperature="81.5",
                firmware="4.0.1",
            ),
            reading("M1", "2026-11-20T10:20:00.000+01:00", vibration_mm_s=4.7),  # temperature missing: NULL
            reading("M2", "2026-11-20T10:00:00.000+01:00", temperature="ERR"),
            reading("M2", "2026-11-20T10:10:00.000+01:00", pressure="NaN"),
            reading("M2", "2026-11-20T10:20:00.000+01:00", rpm=1e999),
            reading("M2", "2026-11-20T10:30:00.000+01:00", cycle=0),
        ],
    )
    load = run_silver(spark, lake_config, TELEMETRY)
    assert load.counts == {"header": 0, "quarantined": 4, "duplicate": 0, "loaded": 3}
    silver, _, _, _ = tables(spark, lake_config, "telemetry")
    got = silver.read().select("machine_id", "ts", "vibration_mm_s", "temperature", "firmware")
    expected = spark.createDataFrame(
        [
            ("M1", dt.datetime(2026, 11, 20, 9, 0), 4.5, 80.0, "3.1.0"),
            ("M1", dt.datetime(2026, 11, 20, 9, 10), 4.6, 81.5, "4.0.1"),
            ("M1", dt.datetime(2026, 11, 20, 9, 20), 4.7, None, None),
        ],
        "machine_id string, ts timestamp, vibration_mm_s double, temperature double, firmware string",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    reasons = sorted(r.reason for r in quarantined(spark, lake_config, "telemetry").collect())
    assert reasons == [
        "invalid cycle: not a positive integer",
        "invalid pressure: not a finite number",
        "invalid rpm: not a finite number",
        "invalid temperature: not a finite number",
    ]


def test_chargebacks_keep_reversals_as_rows(spark, lake_config):
    deliver(
        lake_config,
        "chargebacks",
        "chargebacks-2026-11-20-00000.csv",
        [
            "txn_id,reported_at,reason_code",
            "tx-1,2026-11-02T09:00:00Z,10.4",
            "tx-1,2026-11-20T09:00:00Z,reversed",
            "tx-2,2026-11-20T09:00:00Z,",
            "tx-1,2026-11-02T09:00:00Z,10.4",
        ],
    )
    load = run_silver(spark, lake_config, CHARGEBACKS)
    assert load.counts == {"header": 1, "quarantined": 1, "duplicate": 1, "loaded": 2}
    silver, _, _, _ = tables(spark, lake_config, "chargebacks")
    got = silver.read().select("txn_id", "reason_code", "is_reversal", "event_date")
    expected = spark.createDataFrame(
        [("tx-1", "10.4", False, dt.date(2026, 11, 2)), ("tx-1", "REVERSED", True, RUN_DATE)],
        "txn_id string, reason_code string, is_reversal boolean, event_date date",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_a_parser_that_loses_rows_fails_the_accounting_check(spark, lake_config):
    lossy = dataclasses.replace(
        MAINTENANCE,
        parse=lambda bronze, rules: MAINTENANCE.parse(bronze, rules).where(F.col("kind") != "repair"),
    )
    deliver(
        lake_config,
        "maintenance",
        "maintenance-2026-11-20-00000.csv",
        [
            "machine_id,ts,kind,component",
            "M1,2026-11-20T10:00:00Z,failure,pump",
            "M1,2026-11-20T12:00:00Z,repair,pump",
        ],
    )
    with pytest.raises(JobFailed, match="row accounting mismatch: bronze has 3 rows"):
        run_silver(spark, lake_config, lossy)
    silver, _, job_runs, _ = tables(spark, lake_config, "maintenance")
    assert silver.read().count() == 0
    assert [r.status for r in job_runs.read().collect()] == ["failed"]


def test_silver_without_bronze_is_a_clear_error(spark, lake_config):
    with pytest.raises(JobFailed, match="bronze/telemetry does not exist .* run the ingest_bronze job first"):
        load_silver(spark, lake_config, TELEMETRY)
