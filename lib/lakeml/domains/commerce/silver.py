"""Clickstream bronze → silver: typed, UTC, deduplicated shop events with the IP tokenized."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.ingest.raw import (
    json_event_dates,
    missing_rules,
    parse_timestamp,
    raw,
    reject_reason,
    silver_tail,
    timestamp_rules,
    with_json_fields,
    with_values,
)
from lakeml.ingest.silver import SILVER_LINEAGE_FIELDS, ParseRules, SilverFeed
from lakeml.transforms.pii import hmac_sha256_hex
from lakeml.transforms.standardize import normalize_code, parse_decimal, parse_int, utc_offset_minutes

CLICKSTREAM_FIELDS = (
    "event_id", "ts", "user_id", "session_id", "event_type", "item_id", "category", "price", "quantity",
    "rating", "device", "ip", "user_agent", "referrer", "app_version",
)  # fmt: skip
CLICKSTREAM_REQUIRED = ("event_id", "ts", "user_id", "session_id", "event_type", "item_id", "price")
EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
EVENTS_WITH_QUANTITY = ("add_to_cart", "remove_from_cart", "purchase")
PRICE = T.DecimalType(12, 2)
USER_ID_PATTERN = r"^u-\d+$"
ITEM_ID_PATTERN = r"^i-\d+$"

CLICKSTREAM_SILVER_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # UTC
        T.StructField("utc_offset_minutes", T.IntegerType(), True),  # the device's zone, for local time
        T.StructField("user_id", T.StringType(), False),
        T.StructField("session_id", T.StringType(), False),
        T.StructField("event_type", T.StringType(), False),  # lower case, one of EVENT_TYPES
        T.StructField("item_id", T.StringType(), False),
        T.StructField("category", T.StringType(), True),  # lower case
        T.StructField("price", PRICE, False),  # EUR
        T.StructField("quantity", T.IntegerType(), True),  # on cart and purchase events
        T.StructField("rating", T.IntegerType(), True),  # 1-5 on rating events
        T.StructField("device", T.StringType(), True),
        T.StructField("ip_token", T.StringType(), True),  # HMAC-SHA-256 of the IP address
        T.StructField("user_agent", T.StringType(), True),
        T.StructField("referrer", T.StringType(), True),
        T.StructField("app_version", T.StringType(), True),  # schema v2 field; NULL before it existed
        *SILVER_LINEAGE_FIELDS,
    ]
)


def parse_clickstream(bronze: DataFrame, rules: ParseRules) -> DataFrame:
    """Reads bronze clickstream lines; adds the silver columns, _reject_reason and _is_header."""
    assert rules.pii_key is not None
    fields = with_json_fields(bronze, CLICKSTREAM_FIELDS)
    fields, v = with_values(
        fields,
        {
            "ts": parse_timestamp("ts"),
            "event_type": normalize_code(raw("event_type")),
            # wide, so a huge price fails the range rule, not parsing
            "price": parse_decimal(raw("price"), 38, 2),
            "quantity": parse_int(raw("quantity")),
            "rating": parse_int(raw("rating")),
        },
    )
    ts, event_type, price, quantity, rating = v["ts"], v["event_type"], v["price"], v["quantity"], v["rating"]
    reason = reject_reason(
        [
            *missing_rules(CLICKSTREAM_REQUIRED),
            *timestamp_rules("ts", ts, rules),
            (~raw("user_id").rlike(USER_ID_PATTERN), "invalid user_id: not u-<digits>"),
            (~raw("item_id").rlike(ITEM_ID_PATTERN), "invalid item_id: not i-<digits>"),
            (~event_type.isin(*EVENT_TYPES), F.concat(F.lit("unknown event_type: "), raw("event_type"))),
            (price.isNull(), "invalid price: not a decimal"),
            (price < 0, "invalid price: negative"),
            (price > rules.silver.max_price_eur, f"invalid price: above {rules.silver.max_price_eur:g}"),
            (
                event_type.isin(*EVENTS_WITH_QUANTITY) & F.coalesce(quantity < 1, F.lit(True)),
                "invalid quantity: cart and purchase events need a positive integer",
            ),
            (
                (event_type == "rating") & ~F.coalesce(rating.between(1, 5), F.lit(False)),
                "invalid rating: not 1-5",
            ),
        ]
    )
    return fields.select(
        raw("event_id").alias("event_id"),
        ts.alias("ts"),
        utc_offset_minutes(raw("ts")).alias("utc_offset_minutes"),
        raw("user_id").alias("user_id"),
        raw("session_id").alias("session_id"),
        event_type.alias("event_type"),
        raw("item_id").alias("item_id"),
        normalize_code(raw("category")).alias("category"),
        price.try_cast(PRICE).alias("price"),
        F.when(event_type.isin(*EVENTS_WITH_QUANTITY), quantity).alias("quantity"),
        F.when(event_type == "rating", rating).alias("rating"),
        normalize_code(raw("device")).alias("device"),
        hmac_sha256_hex(raw("ip"), rules.pii_key).alias("ip_token"),
        F.col("r.user_agent").alias("user_agent"),
        F.col("r.referrer").alias("referrer"),
        raw("app_version").alias("app_version"),
        *silver_tail(ts, reason),
    )


CLICKSTREAM = SilverFeed(
    name="clickstream",
    schema=CLICKSTREAM_SILVER_SCHEMA,
    keys=("event_id",),
    parse=parse_clickstream,
    needs_pii_key=True,
    event_dates=json_event_dates("ts"),
)
