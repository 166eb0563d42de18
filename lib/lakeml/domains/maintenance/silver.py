"""Telemetry and maintenance bronze → silver: typed, UTC, one vibration unit name across firmware."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.ingest.raw import (
    csv_event_dates,
    json_event_dates,
    missing_rules,
    parse_timestamp,
    raw,
    reject_reason,
    silver_tail,
    timestamp_rules,
    with_csv_fields,
    with_json_fields,
    with_values,
)
from lakeml.ingest.silver import SILVER_LINEAGE_FIELDS, ParseRules, SilverFeed
from lakeml.transforms.standardize import normalize_code, parse_finite_double, parse_int, utc_offset_minutes

SETTINGS = ("setting_1", "setting_2", "setting_3")
# Silver sensor columns; ``vibration_mm_s`` is ``vibration`` before firmware 4.0 renamed it.
SENSORS = (
    "temperature", "pressure", "vibration_mm_s", "rpm", "current", "voltage", "flow", "oil_temp",
    "humidity", "torque", "acoustic", "power_kw",
)  # fmt: skip
LEGACY_SENSOR_NAMES = {"vibration_mm_s": "vibration"}
TELEMETRY_FIELDS = ("machine_id", "ts", "cycle", *SETTINGS, *SENSORS, "vibration", "firmware")
TELEMETRY_REQUIRED = ("machine_id", "ts", "cycle", *SETTINGS)
MAINTENANCE_FIELDS = ("machine_id", "ts", "kind", "component")
MAINTENANCE_KINDS = ("failure", "repair", "preventive")

TELEMETRY_SILVER_SCHEMA = T.StructType(
    [
        T.StructField("machine_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # UTC
        T.StructField("utc_offset_minutes", T.IntegerType(), True),  # the site's zone
        T.StructField("cycle", T.IntegerType(), False),
        *[T.StructField(s, T.DoubleType(), False) for s in SETTINGS],
        # NULL = the reading was absent; a present but non-finite reading quarantines the row.
        *[T.StructField(s, T.DoubleType(), True) for s in SENSORS],
        T.StructField("firmware", T.StringType(), True),
        *SILVER_LINEAGE_FIELDS,
    ]
)

MAINTENANCE_SILVER_SCHEMA = T.StructType(
    [
        T.StructField("machine_id", T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # UTC
        T.StructField("utc_offset_minutes", T.IntegerType(), True),
        T.StructField("kind", T.StringType(), False),  # failure | repair | preventive (lower case)
        T.StructField("component", T.StringType(), True),  # NULL when the technician left it empty
        *SILVER_LINEAGE_FIELDS,
    ]
)


def parse_telemetry(bronze: DataFrame, rules: ParseRules) -> DataFrame:
    """Reads bronze telemetry lines; adds the silver columns, _reject_reason and _is_header."""
    fields = with_json_fields(bronze, TELEMETRY_FIELDS)
    sensor_text = {
        s: F.coalesce(raw(s), raw(LEGACY_SENSOR_NAMES[s])) if s in LEGACY_SENSOR_NAMES else raw(s)
        for s in SENSORS
    }
    texts = {**{s: raw(s) for s in SETTINGS}, **sensor_text}
    fields, v = with_values(
        fields,
        {
            "ts": parse_timestamp("ts"),
            "cycle": parse_int(raw("cycle")),
            **{name: parse_finite_double(text) for name, text in texts.items()},
        },
    )
    ts, cycle = v["ts"], v["cycle"]
    numbers = {name: v[name] for name in texts}
    reason = reject_reason(
        [
            *missing_rules(TELEMETRY_REQUIRED),
            *timestamp_rules("ts", ts, rules),
            (F.coalesce(cycle < 1, F.lit(True)), "invalid cycle: not a positive integer"),
            *[
                (text.isNotNull() & numbers[name].isNull(), f"invalid {name}: not a finite number")
                for name, text in {**{s: raw(s) for s in SETTINGS}, **sensor_text}.items()
            ],
        ]
    )
    return fields.select(
        raw("machine_id").alias("machine_id"),
        ts.alias("ts"),
        utc_offset_minutes(raw("ts")).alias("utc_offset_minutes"),
        cycle.alias("cycle"),
        *[numbers[s].alias(s) for s in (*SETTINGS, *SENSORS)],
        raw("firmware").alias("firmware"),
        *silver_tail(ts, reason),
    )


def parse_maintenance(bronze: DataFrame, rules: ParseRules) -> DataFrame:
    """Reads bronze maintenance CSV lines; adds the silver columns, _reject_reason and _is_header."""
    fields = with_csv_fields(bronze, MAINTENANCE_FIELDS)
    fields, v = with_values(fields, {"ts": parse_timestamp("ts"), "kind": normalize_code(raw("kind"))})
    ts, kind = v["ts"], v["kind"]
    reason = reject_reason(
        [
            *missing_rules(("machine_id", "ts", "kind")),
            *timestamp_rules("ts", ts, rules),
            (~kind.isin(*MAINTENANCE_KINDS), F.concat(F.lit("unknown kind: "), raw("kind"))),
        ]
    )
    return fields.select(
        raw("machine_id").alias("machine_id"),
        ts.alias("ts"),
        utc_offset_minutes(raw("ts")).alias("utc_offset_minutes"),
        kind.alias("kind"),
        normalize_code(raw("component")).alias("component"),
        *silver_tail(ts, reason),
    )


TELEMETRY = SilverFeed(
    name="telemetry",
    schema=TELEMETRY_SILVER_SCHEMA,
    keys=("machine_id", "ts"),
    parse=parse_telemetry,
    event_dates=json_event_dates("ts"),
)
MAINTENANCE = SilverFeed(
    name="maintenance",
    schema=MAINTENANCE_SILVER_SCHEMA,
    keys=("machine_id", "ts", "kind"),
    parse=parse_maintenance,
    event_dates=csv_event_dates(MAINTENANCE_FIELDS, "ts"),
)
