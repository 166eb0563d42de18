"""banking.fraud_alerts: the nearline stream (landing → silver contract → per-card state → champion → gold/fraud_alerts)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.domains.banking.card_state import LATE_REASON
from lakeml.domains.banking.nearline import APP_ID, FRAUD_ALERTS_SCHEMA, run_fraud_alerts
from lakeml.errors import JobFailed
from lakeml.lakehouse import Lakehouse
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
