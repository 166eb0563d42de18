"""Card numbers at rest: tokenized as bronze loads them, so no clear PAN is stored past the landing zone."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakeml.config import load_config
from lakeml.domains.banking.silver import TRANSACTION_FIELDS, parse_transactions
from lakeml.errors import ConfigError
from lakeml.ingest.bronze import load_feed_to_bronze
from lakeml.ingest.silver import ParseRules
from lakeml.lakehouse import Lakehouse
from lakeml.transforms.pii import mask_pans, mask_pans_in_bytes, pii_key

KEY = b"pan-test-key-0123456789"
VISA = "4532015112830366"  # Luhn-valid
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"  # 15 digits


def token(digits: str) -> str:
    mac = hmac.new(KEY, digits.encode(), hashlib.sha256).hexdigest()
    return f"pan:{mac}:{len(digits):02d}:{digits[-4:]}"


MASKED = [
    # (line, expected after masking)
    (f"tx01,2026-11-20T13:45:12.123Z,{VISA},A1", f"tx01,2026-11-20T13:45:12.123Z,{token(VISA)},A1"),
    ("tx02,x,4532 0151 1283 0366,A1", f"tx02,x,{token(VISA)},A1"),  # grouped form, same token
    ("5555-5555-5555-4444", token(MASTERCARD)),
    (f"<html>card {AMEX} declined</html", f"<html>card {token(AMEX)} declined</html"),  # garbage line
    ("3782 822463 10005", token(AMEX)),  # Amex grouping
    (f'{{"card":"{VISA}","again":{VISA}}}', f'{{"card":"{token(VISA)}","again":{token(VISA)}}}'),
    (f"tx03,{VISA[:9]}", f"tx03,{VISA[:9]}"),  # truncated line: too short to be a PAN
]
KEPT = [
    "4532015112830367",  # not Luhn-valid
    f"tx{VISA}",  # part of an id
    f"12.{VISA}",  # the decimals of a number
    f"{VISA}0000",  # 20 digits
    "2026-11-20,1763647387122,48.1234",  # dates, non-Luhn epoch, coordinates
    "00000000-0000-4000-8000-000100000123",  # an all-digit UUID (its groups are Luhn-valid)
    "4532 0151-1283 0366",  # mixed separators: not a grouping a PAN is printed in
]


def test_mask_pans_tokenizes_every_luhn_valid_span_and_nothing_else(spark):
    rows = [(line, masked) for line, masked in MASKED] + [(line, line) for line in KEPT] + [(None, None)]
    df = spark.createDataFrame(rows, "line string, expected string")
    got = df.select(mask_pans(F.col("line"), KEY).alias("masked"), "expected")
    assert got.where(~F.col("masked").eqNullSafe(F.col("expected"))).count() == 0
    # Idempotent: a masked line masks to itself (tokens never look like PANs).
    twice = got.select(mask_pans(F.col("masked"), KEY).alias("again"), "masked")
    assert twice.where(~F.col("again").eqNullSafe(F.col("masked"))).count() == 0


def test_mask_pans_in_bytes_keeps_every_other_byte(spark):
    raw = b"\xff\xfe bad bytes " + VISA.encode() + b" \x80\n"
    df = spark.createDataFrame([(bytearray(raw),)], "b binary")
    (masked,) = df.select(mask_pans_in_bytes(F.col("b"), KEY)).first()
    assert bytes(masked) == b"\xff\xfe bad bytes " + token(VISA).encode() + b" \x80\n"


def test_pii_key_from_a_file_only_owner_readable_and_outside_the_lake(tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEML_KEY_TEST", raising=False)
    lake = tmp_path / "lake"
    key_file = tmp_path / "conf" / "pii.key"
    with pytest.raises(ConfigError, match="LAKEML_KEY_TEST .*not set, nor is there a key file at .*pii.key"):
        pii_key("LAKEML_KEY_TEST", str(key_file), str(lake))
    key_file.parent.mkdir()
    key_file.write_text("0123456789abcdef0123\n")
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others .*chmod 600"):
        pii_key("LAKEML_KEY_TEST", str(key_file), str(lake))
    key_file.chmod(0o600)
    assert pii_key("LAKEML_KEY_TEST", str(key_file), str(lake)) == b"0123456789abcdef0123"
    inside = lake / "_secrets" / "pii.key"
    inside.parent.mkdir(parents=True)
    inside.write_text("0123456789abcdef0123")
    inside.chmod(0o600)
    with pytest.raises(ConfigError, match="inside the lakehouse"):
        pii_key("LAKEML_KEY_TEST", str(inside), str(lake))
    monkeypatch.setenv("LAKEML_KEY_TEST", "from-the-environment-key")
    assert pii_key("LAKEML_KEY_TEST", str(inside), str(lake)) == b"from-the-environment-key"


@pytest.fixture
def lake_config(tmp_path):
    return load_config("test", [f"lakehouse.root={tmp_path / 'lake'}", "lakehouse.landing_retention_days=2"])


def deliver(config, name: str, data: bytes) -> Path:
    folder = Path(config.landing_path()) / "transactions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_bronze_stores_tokens_and_silver_gives_the_same_card_token_as_for_a_clear_pan(spark, lake_config):
    header = ",".join(TRANSACTION_FIELDS)
    valid = "{id},2026-11-20T13:45:12.123Z,{pan},A00000001,M00000001,5411,12.50,EUR,pos,DE,48.1,11.5,true"
    lines = [
        header,
        valid.format(id="tx0000000000000001", pan=VISA),
        valid.format(id="tx0000000000000002", pan="4532 0151 1283 0366"),
        f"<html>502 Bad Gateway {MASTERCARD}",
    ]
    deliver(lake_config, "transactions-2026-11-20-00000.csv", "\n".join(lines).encode() + b"\n")
    deliver(lake_config, "transactions-2026-11-20-00001.csv", b"\xff\xfe " + AMEX.encode() + b"\n")
    load_feed_to_bronze(spark, lake_config, "transactions")
    bronze = Lakehouse(spark, lake_config).table("bronze", "transactions").read()
    assert bronze.count() == 5
    text = bronze.select(F.concat_ws("|", "value", F.decode("raw_bytes", "ISO-8859-1")).alias("t"))
    for pan in (VISA, MASTERCARD, AMEX, "4532 0151 1283 0366"):
        assert text.where(F.col("t").contains(pan)).count() == 0, pan
    assert text.where(F.col("t").contains("pan:")).count() == 4

    # Silver: the token read from bronze equals the token silver computes from a clear PAN (a bronze
    # table loaded before tokenization at load), so card_token joins across old and new rows.
    key = os.environ["LAKEML_PII_KEY"].encode()
    rules = ParseRules(lake_config.silver, key)
    rows = bronze.where(F.col("value").startswith("tx0"))
    parsed = parse_transactions(rows, rules)
    clear = rows.limit(1).select(
        F.lit(valid.format(id="tx0000000000000003", pan=VISA)).alias("value"),
        *[c for c in bronze.columns if c != "value"],
    )
    old = parse_transactions(clear, rules)
    expected_token = hmac.new(key, VISA.encode(), hashlib.sha256).hexdigest()
    assertDataFrameEqual(
        parsed.unionByName(old).select("txn_id", "card_token", "card_last4", "_reject_reason"),
        spark.createDataFrame(
            [(f"tx000000000000000{i}", expected_token, "0366", None) for i in (1, 2, 3)],
            "txn_id string, card_token string, card_last4 string, _reject_reason string",
        ),
        checkRowOrder=False,
    )


def test_loaded_landing_files_past_retention_are_deleted(spark, lake_config):
    old_loaded = deliver(lake_config, "transactions-2026-11-01-00000.csv", b"line one\n")
    new_loaded = deliver(lake_config, "transactions-2026-11-05-00000.csv", b"line two\n")
    empty_old = deliver(lake_config, "transactions-2026-11-01-00001.csv", b"")  # never reaches bronze
    week_ago = time.time() - 7 * 86400
    for path in (old_loaded, empty_old):
        os.utime(path, (week_ago, week_ago))
    load = load_feed_to_bronze(spark, lake_config, "transactions")
    assert load.rows == 2 and load.landing_files_deleted == 1
    assert not old_loaded.exists() and new_loaded.exists() and empty_old.exists()
    # A rerun finds nothing new to load or delete; bronze still has both lines.
    again = load_feed_to_bronze(spark, lake_config, "transactions")
    assert (again.rows, again.landing_files_deleted) == (0, 0)
    assert Lakehouse(spark, lake_config).table("bronze", "transactions").read().count() == 2
