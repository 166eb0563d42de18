"""gold/transaction_features: exact window edges, point-in-time correctness, labels, incremental = full."""

from __future__ import annotations

import datetime as dt
import statistics
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import load_config
from lakeml.domains.banking.features import (
    TRANSACTION_FEATURES_SCHEMA,
    build_transaction_features,
    refresh_transaction_labels,
)
from lakeml.domains.banking.silver import CHARGEBACKS_SILVER_SCHEMA, TRANSACTIONS_SILVER_SCHEMA
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.steps import DateRange

D = dt.date(2026, 3, 10)
T0 = dt.datetime(2026, 3, 10, 12, 0, 0)


def txn(txn_id, card, ts, amount, merchant="M1", country="DE", mcc="5411", lat=52.52, lon=13.405):
    return {
        "txn_id": txn_id, "ts": ts, "card_token": card, "card_last4": "0000", "account_id": "A1",
        "merchant_id": merchant, "mcc": mcc, "amount": Decimal(str(amount)), "currency": "EUR",
        "amount_eur": Decimal(str(amount)), "channel": "pos", "country": country, "lat": lat, "lon": lon,
        "card_present": True, "event_date": ts.date(), "_source_file": "f", "_ingested_at": ts,
    }  # fmt: skip


def chargeback(txn_id, reported_at, code="10.4"):
    return {
        "txn_id": txn_id, "reported_at": reported_at, "reason_code": code, "is_reversal": code == "REVERSED",
        "event_date": reported_at.date(), "_source_file": "f", "_ingested_at": reported_at,
    }  # fmt: skip


def make_lake(spark, root, transactions, chargebacks=(), overrides=()):
    config = load_config("test", [f"lakehouse.root={root}", *overrides])
    lake = Lakehouse(spark, config)
    silver = lake.table("silver", "transactions").create(TRANSACTIONS_SILVER_SCHEMA, ["event_date"])
    silver.append(spark.createDataFrame(transactions, TRANSACTIONS_SILVER_SCHEMA))
    cbs = lake.table("silver", "chargebacks").create(CHARGEBACKS_SILVER_SCHEMA, ["event_date"])
    if chargebacks:
        cbs.append(spark.createDataFrame(list(chargebacks), CHARGEBACKS_SILVER_SCHEMA))
    return config, lake


def features(lake, day=None):
    df = lake.table("gold", "transaction_features").read()
    return df.where(F.col("as_of_date") == day) if day else df


def test_windows_are_strictly_before_with_inclusive_start_and_ties_excluded(spark, tmp_path):
    h = dt.timedelta(hours=1)
    rows = [
        txn("a0", "A", T0 - 30 * 24 * h, 1),  # exactly 30 d before a5: inside [t - 30d, t)
        txn("a1", "A", T0 - 30 * 24 * h - dt.timedelta(microseconds=1), 1000),  # just outside
        txn("a2", "A", T0 - 24 * h, 10, merchant="M2"),  # exactly 24 h before: inside
        txn("a3", "A", T0 - h, 20, country="FR", lat=48.857, lon=2.352),  # exactly 1 h before: inside
        txn("a4", "A", T0, 40, merchant="M3"),  # a tie with a5: not before it
        txn("a5", "A", T0, 50),
        txn("b1", "B", T0, 7),  # empty history
    ]
    config, lake = make_lake(spark, tmp_path, rows)
    build_transaction_features(spark, config, DateRange.single(D))
    got = features(lake, D).select(
        "txn_id", "txn_count_1h", "amount_sum_1h", "txn_count_24h", "amount_sum_24h", "txn_count_7d",
        "txn_count_30d", "amount_sum_30d", "distinct_merchants_24h", "distinct_countries_24h",
            "seconds_since_prev",
    )  # fmt: skip
    expected = spark.createDataFrame(
        [
            ("a3", 0, 0.0, 1, 10.0, 1, 3, 1011.0, 1, 1, 82800.0),  # a1 is inside its own 30 d window
            ("a4", 1, 20.0, 2, 30.0, 2, 3, 31.0, 2, 2, 3600.0),
            ("a5", 1, 20.0, 2, 30.0, 2, 3, 31.0, 2, 2, 3600.0),
            ("b1", 0, 0.0, 0, 0.0, 0, 0, 0.0, 0, 0, None),
        ],
        "txn_id string, txn_count_1h long, amount_sum_1h double, txn_count_24h long, amount_sum_24h double, "
        "txn_count_7d long, txn_count_30d long, amount_sum_30d double, distinct_merchants_24h int, "
        "distinct_countries_24h int, seconds_since_prev double",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    a5 = features(lake, D).where(F.col("txn_id") == "a5").first()
    assert a5.km_from_prev == pytest.approx(878, rel=0.01)  # Paris → Berlin
    assert a5.speed_kmh_from_prev == pytest.approx(878, rel=0.01)
    assert a5.amount_mean_30d == pytest.approx(31 / 3)
    assert a5.amount_std_30d == pytest.approx(statistics.stdev([1, 10, 20]))
    assert a5.amount_zscore_30d == pytest.approx((50 - 31 / 3) / statistics.stdev([1, 10, 20]))
    assert (a5.local_hour, a5.is_night) == (13, False)
    assert lake.table("gold", "transaction_features").schema() == TRANSACTION_FEATURES_SCHEMA
    b1 = features(lake, D).where(F.col("txn_id") == "b1").first()
    assert (b1.km_from_prev, b1.amount_mean_30d, b1.amount_zscore_30d) == (None, None, None)


@pytest.fixture(params=["broadcast", "shuffle"])
def chargeback_join(request, spark):
    """Config overrides for each way the chargebacks meet the transactions (small: broadcast; else
    shuffled)."""
    if request.param == "broadcast":
        yield ()
        return
    # Over the limit, and no automatic broadcast either: the sort-merge join really runs.
    previous = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        yield ("features.banking.chargeback_broadcast_rows=0",)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", previous)


def test_labels_as_of_the_cutoff_and_merchant_risk_from_known_labels_only(spark, tmp_path, chargeback_join):
    rows = [txn(f"old{i}", "C", T0 - dt.timedelta(days=10, minutes=i), 5, mcc="7995") for i in range(4)]
    rows += [txn("now", "C", T0, 100, mcc="7995"), txn("old_legit", "E", T0 - dt.timedelta(days=70), 3)]
    cbs = [
        chargeback("old0", T0 - dt.timedelta(days=3)),  # known before D: counts for risk
        chargeback("old1", T0 - dt.timedelta(days=3)),
        chargeback("old1", T0 - dt.timedelta(days=2), "REVERSED"),  # withdrawn before D
        chargeback("old2", T0 + dt.timedelta(days=1)),  # reported after D: not known on D
        chargeback("now", T0 + dt.timedelta(days=5)),  # the label, known by a later cut-off
        chargeback("old3", T0 - dt.timedelta(days=4), "13.1"),  # not a fraud reason code
        chargeback("old_legit", T0 - dt.timedelta(days=71)),  # dated before its transaction: not its
    ]
    config, lake = make_lake(spark, tmp_path, rows, cbs, chargeback_join)
    settings = config.features.banking
    build_transaction_features(spark, config, DateRange.single(D))
    now = features(lake, D).where(F.col("txn_id") == "now").first()
    prior, weight = settings.mcc_risk_prior_rate, settings.mcc_risk_prior_weight
    assert now.mcc_risk_rate == pytest.approx((1 + prior * weight) / (4 + weight))
    assert (now.label_status, now.label_fraud, now.label_cutoff_date) == ("immature", None, D)

    later = D + dt.timedelta(days=6)
    build_transaction_features(spark, config, DateRange.single(D), label_cutoff=later)
    now = features(lake, D).where(F.col("txn_id") == "now").first()
    assert (now.label_status, now.label_fraud, now.mcc_risk_rate) == (
        "fraud",
        1,
        pytest.approx((1 + prior * weight) / (4 + weight)),
    )
    build_transaction_features(spark, config, DateRange.single(D - dt.timedelta(days=70)), label_cutoff=D)
    old = features(lake, D - dt.timedelta(days=70)).first()
    assert (old.txn_id, old.label_status, old.label_fraud) == ("old_legit", "legit", 0)  # window closed, none


def test_a_daily_run_writes_its_day_only_and_the_refresh_rewrites_changed_label_days_only(spark, tmp_path):
    h = dt.timedelta(hours=1)
    rows = [
        txn("quiet", "Q", T0 - 24 * h, 20),  # day D-1: no chargeback, window still open at D+6
        txn("now", "C", T0, 100),  # day D: a fraud chargeback reported at D+5
        txn("late", "C", T0 + 6 * 24 * h, 30),  # day D+6: the later daily run's own day
    ]
    cbs = [chargeback("now", T0 + 5 * 24 * h)]
    config, lake = make_lake(spark, tmp_path, rows, cbs)
    gold = lake.table("gold", "transaction_features")
    build_transaction_features(spark, config, DateRange(D - dt.timedelta(days=1), D))
    assert {r.txn_id: r.label_status for r in features(lake).collect()} == {
        "quiet": "immature",
        "now": "immature",
    }
    earlier_files = {f.path for f in gold.files([("as_of_date", "<=", D)])}

    later = D + dt.timedelta(days=6)
    counts = build_transaction_features(spark, config, DateRange.single(later))
    assert counts.details == {"transaction_features": 1, "days": 1}
    # The daily run committed its own day only: the earlier days' files are the same files.
    assert {f.path for f in gold.files([("as_of_date", "<=", D)])} == earlier_files
    assert features(lake, D).first().label_status == "immature"

    refreshed = refresh_transaction_labels(spark, config, DateRange.single(later))
    assert refreshed.details == {"relabelled_days": 1, "rows": 1}
    got = features(lake).select("txn_id", "as_of_date", "label_status", "label_fraud", "label_cutoff_date")
    expected = spark.createDataFrame(
        [
            ("quiet", D - dt.timedelta(days=1), "immature", None, D),  # unchanged day: not rewritten
            ("now", D, "fraud", 1, later),
            ("late", later, "immature", None, later),
        ],
        "txn_id string, as_of_date date, label_status string, label_fraud int, label_cutoff_date date",
    )
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    assert {f.path for f in gold.files([("as_of_date", "=", D - dt.timedelta(days=1))])} <= earlier_files
    version = gold.version()
    assert refresh_transaction_labels(spark, config, DateRange.single(later)).details == {
        "relabelled_days": 0,
        "rows": 0,
    }
    # A refresh as of an older date does not move labels back.
    assert refresh_transaction_labels(spark, config, DateRange.single(D)).details == {
        "relabelled_days": 0,
        "rows": 0,
    }
    assert gold.version() == version  # nothing committed
    with pytest.raises(ConfigError, match="label_refresh_days"):
        refresh_transaction_labels(
            spark,
            load_config("test", [f"lakehouse.root={tmp_path}", "features.banking.label_refresh_days=10"]),
            DateRange.single(D),
        )


def test_refresh_before_any_feature_run_fails_clearly(spark, tmp_path):
    config, _ = make_lake(spark, tmp_path, [txn("a", "A", T0, 1)])
    with pytest.raises(JobFailed, match="run banking.build_features first"):
        refresh_transaction_labels(spark, config, DateRange.single(D))


def history(days: int, cards: int = 3) -> list[dict]:
    """Deterministic transactions over ``days`` days ending on D, several per card and day, some ties."""
    rows = []
    for day in range(days):
        for card in range(cards):
            for k in range((day * 7 + card * 3) % 4 + 1):
                ts = dt.datetime.combine(D - dt.timedelta(days=days - 1 - day), dt.time()) + dt.timedelta(
                    hours=(card * 5 + k * 7 + day) % 24, minutes=(k * 13) % 60 if k != 2 else 0
                )
                amount = round(3 + ((day * 31 + card * 17 + k * 11) % 97) * 1.37, 2)
                country = ("DE", "FR", "JP")[(day + k) % 3]
                rows.append(
                    txn(f"t{day}-{card}-{k}", f"card{card}", ts, amount, f"M{(k + day) % 5}", country)
                )
    return rows


def test_one_incremental_day_equals_the_full_recompute(spark, tmp_path):
    rows = history(40)
    config, lake = make_lake(spark, tmp_path / "full", rows)
    build_transaction_features(spark, config, DateRange(D - dt.timedelta(days=4), D), label_cutoff=D)
    full = features(lake, D)
    config_inc, lake_inc = make_lake(spark, tmp_path / "inc", rows)
    build_transaction_features(spark, config_inc, DateRange.single(D))
    incremental = features(lake_inc, D)
    assert full.count() == incremental.count() > 0
    assertDataFrameEqual(incremental, full, checkRowOrder=False, rtol=1e-9)
    # The incremental run really took the long windows from daily aggregates, not all the rows.
    assert full.where(F.col("txn_count_30d") > 40).count() > 0
    # Rerunning the same day leaves the same rows.
    before = incremental.collect()
    build_transaction_features(spark, config_inc, DateRange.single(D))
    assertDataFrameEqual(features(lake_inc, D), before, checkRowOrder=False)


def test_later_events_do_not_change_earlier_features(spark, tmp_path):
    rows = history(35)
    config, lake = make_lake(spark, tmp_path / "base", rows)
    build_transaction_features(spark, config, DateRange.single(D))
    cut = T0  # every change below happens after this instant
    changed = [dict(r, amount_eur=r["amount_eur"] * 3) if r["ts"] > cut else r for r in rows]
    changed += [txn(f"late{i}", f"card{i % 3}", cut + dt.timedelta(minutes=1 + i), 999) for i in range(5)]
    config2, lake2 = make_lake(spark, tmp_path / "changed", changed)
    build_transaction_features(spark, config2, DateRange.single(D))
    before = features(lake, D).where(F.col("ts") <= cut)
    after = features(lake2, D).where(F.col("ts") <= cut)
    assert before.count() > 0
    assertDataFrameEqual(after, before, checkRowOrder=False, rtol=1e-9)
    assert (
        features(lake2, D)
        .where(F.col("ts") > cut)
        .exceptAll(features(lake, D).where(F.col("ts") > cut))
        .count()
        > 0
    )
