"""Transactions and chargebacks bronze → silver: typed, UTC, money as decimals, PANs tokenized."""

from __future__ import annotations

from itertools import chain

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.ingest.raw import (
    csv_event_dates,
    missing_rules,
    parse_timestamp,
    raw,
    reject_reason,
    silver_tail,
    timestamp_rules,
    with_csv_fields,
    with_values,
)
from lakeml.ingest.silver import SILVER_LINEAGE_FIELDS, ParseRules, SilverFeed
from lakeml.transforms.pii import PAN_TOKEN_PATTERN, hmac_sha256_hex, last_digits
from lakeml.transforms.standardize import normalize_code, parse_boolean, parse_decimal, parse_finite_double

TRANSACTION_FIELDS = (
    "txn_id", "ts", "card_number", "account_id", "merchant_id", "merchant_category", "amount", "currency",
    "channel", "country", "lat", "lon", "card_present",
)  # fmt: skip
TRANSACTION_REQUIRED = tuple(f for f in TRANSACTION_FIELDS if f not in ("lat", "lon"))
CHANNELS = ("pos", "ecom", "atm")
CHARGEBACK_FIELDS = ("txn_id", "reported_at", "reason_code")
REVERSAL_CODE = "REVERSED"
REASON_CODE_PATTERN = r"^(\d{1,2}\.\d{1,2}|REVERSED)$"
MONEY = T.DecimalType(18, 2)

TRANSACTIONS_SILVER_SCHEMA = T.StructType(
    [
        T.StructField("txn_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # UTC
        T.StructField("card_token", T.StringType(), False),  # HMAC-SHA-256 of the 16-digit PAN
        T.StructField("card_last4", T.StringType(), False),  # for display only
        T.StructField("account_id", T.StringType(), False),
        T.StructField("merchant_id", T.StringType(), False),
        T.StructField("mcc", T.StringType(), False),  # ISO 18245 merchant category code
        T.StructField("amount", MONEY, False),  # in `currency`
        T.StructField("currency", T.StringType(), False),  # ISO 4217, upper case
        T.StructField("amount_eur", MONEY, False),  # at the reference rate silver.eur_rates
        T.StructField("channel", T.StringType(), False),  # pos | ecom | atm
        T.StructField("country", T.StringType(), False),  # ISO 3166 alpha-2, upper case
        T.StructField("lat", T.DoubleType(), True),  # NULL when the source had no location
        T.StructField("lon", T.DoubleType(), True),
        T.StructField("card_present", T.BooleanType(), False),
        *SILVER_LINEAGE_FIELDS,
    ]
)

CHARGEBACKS_SILVER_SCHEMA = T.StructType(
    [
        T.StructField("txn_id", T.StringType(), False),
        T.StructField("reported_at", T.TimestampType(), False),  # UTC
        T.StructField("reason_code", T.StringType(), False),  # upper case; REVERSED withdraws the dispute
        T.StructField("is_reversal", T.BooleanType(), False),
        *SILVER_LINEAGE_FIELDS,
    ]
)


def _eur_rate(currency: Column, rates: dict[str, float]) -> Column:
    table = F.create_map(*chain.from_iterable((F.lit(k), F.lit(float(v))) for k, v in sorted(rates.items())))
    return F.element_at(table, currency)


def parse_transactions(bronze: DataFrame, rules: ParseRules) -> DataFrame:
    """Reads bronze transaction CSV lines; adds the silver columns, _reject_reason and _is_header."""
    assert rules.pii_key is not None
    fields = with_csv_fields(bronze, TRANSACTION_FIELDS)
    fields, v = with_values(
        fields,
        {
            "ts": parse_timestamp("ts"),
            "pan": F.regexp_replace(raw("card_number"), r"[ -]", ""),  # "4532 0112 ..." is the same card
            "amount": parse_decimal(raw("amount"), 38, 2),  # wide, so a huge amount fails the range rule
            "currency": normalize_code(raw("currency"), upper=True),
            "channel": normalize_code(raw("channel")),
            "lat": parse_finite_double(raw("lat")),
            "lon": parse_finite_double(raw("lon")),
            "card_present": parse_boolean(raw("card_present")),
        },
    )
    ts, pan, amount, currency, channel = v["ts"], v["pan"], v["amount"], v["currency"], v["channel"]
    # Bronze holds the PAN's token (pan:<hmac>:<digits>:<last 4>); a clear PAN (bronze loaded
    # before tokenization at load) is tokenized here with the same key, so both give the same token.
    loaded_token = F.regexp_extract(raw("card_number"), PAN_TOKEN_PATTERN, 1)
    tokenized = loaded_token != ""
    pan_digits = F.regexp_extract(raw("card_number"), PAN_TOKEN_PATTERN, 2)
    valid_pan = F.when(tokenized, pan_digits == "16").otherwise(
        pan.rlike(r"^\d{16}$") & F.call_function("luhn_check", pan)
    )
    lat, lon, card_present = v["lat"], v["lon"], v["card_present"]
    fields, v = with_values(fields, {"rate": _eur_rate(currency, dict(rules.silver.eur_rates))})
    rate = v["rate"]
    amount_eur = F.round(amount / rate, 2).try_cast(MONEY)
    reason = reject_reason(
        [
            *missing_rules(TRANSACTION_REQUIRED),
            *timestamp_rules("ts", ts, rules),
            (~valid_pan, "invalid card_number: not a 16-digit Luhn-valid PAN"),
            (~raw("merchant_category").rlike(r"^\d{4}$"), "invalid merchant_category: not a 4-digit MCC"),
            (amount.isNull(), "invalid amount: not a decimal"),
            (amount < 0, "invalid amount: negative"),
            (rate.isNull(), F.concat(F.lit("unknown currency: "), raw("currency"))),
            (
                # NULL: the amount overflows silver's DECIMAL(18,2) in EUR, far above any limit
                F.coalesce(amount_eur > rules.silver.max_amount_eur, F.lit(True)),
                f"invalid amount: above {rules.silver.max_amount_eur:g} EUR",
            ),
            (~channel.isin(*CHANNELS), F.concat(F.lit("unknown channel: "), raw("channel"))),
            (
                ~normalize_code(raw("country"), upper=True).rlike(r"^[A-Z]{2}$"),
                "invalid country: not ISO alpha-2",
            ),
            (raw("lat").isNull() != raw("lon").isNull(), "invalid location: lat and lon must come together"),
            (raw("lat").isNotNull() & ~F.coalesce(lat.between(-90, 90), F.lit(False)), "invalid lat"),
            (raw("lon").isNotNull() & ~F.coalesce(lon.between(-180, 180), F.lit(False)), "invalid lon"),
            (card_present.isNull(), "invalid card_present: not true/false"),
        ]
    )
    return fields.select(
        raw("txn_id").alias("txn_id"),
        ts.alias("ts"),
        F.when(tokenized, loaded_token).otherwise(hmac_sha256_hex(pan, rules.pii_key)).alias("card_token"),
        F.when(tokenized, F.regexp_extract(raw("card_number"), PAN_TOKEN_PATTERN, 3))
        .otherwise(last_digits(pan))
        .alias("card_last4"),
        raw("account_id").alias("account_id"),
        raw("merchant_id").alias("merchant_id"),
        raw("merchant_category").alias("mcc"),
        amount.try_cast(MONEY).alias("amount"),
        currency.alias("currency"),
        amount_eur.alias("amount_eur"),
        channel.alias("channel"),
        normalize_code(raw("country"), upper=True).alias("country"),
        lat.alias("lat"),
        lon.alias("lon"),
        card_present.alias("card_present"),
        *silver_tail(ts, reason),
    )


def parse_chargebacks(bronze: DataFrame, rules: ParseRules) -> DataFrame:
    """Reads bronze chargeback CSV lines; adds the silver columns, _reject_reason and _is_header."""
    fields = with_csv_fields(bronze, CHARGEBACK_FIELDS)
    fields, v = with_values(
        fields,
        {
            "reported_at": parse_timestamp("reported_at"),
            "code": normalize_code(raw("reason_code"), upper=True),
        },
    )
    reported_at, code = v["reported_at"], v["code"]
    reason = reject_reason(
        [
            *missing_rules(CHARGEBACK_FIELDS),
            *timestamp_rules("reported_at", reported_at, rules),
            (~code.rlike(REASON_CODE_PATTERN), F.concat(F.lit("invalid reason_code: "), raw("reason_code"))),
        ]
    )
    return fields.select(
        raw("txn_id").alias("txn_id"),
        reported_at.alias("reported_at"),
        code.alias("reason_code"),
        (code == REVERSAL_CODE).alias("is_reversal"),
        *silver_tail(reported_at, reason),
    )


TRANSACTIONS = SilverFeed(
    name="transactions",
    schema=TRANSACTIONS_SILVER_SCHEMA,
    keys=("txn_id",),
    parse=parse_transactions,
    needs_pii_key=True,
    event_dates=csv_event_dates(TRANSACTION_FIELDS, "ts"),
)
CHARGEBACKS = SilverFeed(
    name="chargebacks",
    schema=CHARGEBACKS_SILVER_SCHEMA,
    keys=("txn_id", "reported_at", "reason_code"),
    parse=parse_chargebacks,
    event_dates=csv_event_dates(CHARGEBACK_FIELDS, "reported_at"),
)
