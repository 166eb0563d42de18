"""Bad input corpus: every kind of broken delivery across the five feeds, each with its expected outcome.

One lake, every kind delivered at once (files named by kind), bronze and silver run once per feed
(twice for the feeds with a kind that acts after a first load): each kind's lines are then looked
up by source file. Per kind: bronze holds the lines the load rule says (Hadoop's line splitting:
``\\n``, ``\\r\\n`` and ``\\r`` end a line), and every one of them is loaded, quarantined with the
expected reason, a header or a duplicate (loaded + quarantined + header + duplicate = bronze lines).

Covered elsewhere and not repeated here: the clickstream field rules and undecodable bytes
(test_silver.py), PAN tokenizing (test_pii_at_rest.py), quality-gate failures (test_quality.py).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lakeml.config import load_config
from lakeml.domains.banking.silver import CHARGEBACK_FIELDS, CHARGEBACKS, TRANSACTION_FIELDS, TRANSACTIONS
from lakeml.domains.commerce.silver import CLICKSTREAM
from lakeml.domains.maintenance.silver import MAINTENANCE, MAINTENANCE_FIELDS, SENSORS, SETTINGS, TELEMETRY
from lakeml.lakehouse import Lakehouse
from tests.reliability_report import record
from tests.test_silver import click as silver_click
from tests.test_silver import run_silver, tolerant_of_quarantine
from tests.test_silver import transaction as silver_transaction

FEEDS = {f.name: f for f in (CLICKSTREAM, TRANSACTIONS, CHARGEBACKS, TELEMETRY, MAINTENANCE)}
EXTENSIONS = {
    "clickstream": "jsonl",
    "transactions": "csv",
    "chargebacks": "csv",
    "telemetry": "jsonl",
    "maintenance": "csv",
}
HEADERS = {
    "transactions": ",".join(TRANSACTION_FIELDS),
    "chargebacks": ",".join(CHARGEBACK_FIELDS),
    "maintenance": ",".join(MAINTENANCE_FIELDS),
}
TS = "2026-11-20T14:03:07.123+01:00"
PAN = "4532011234567895"  # Luhn-valid
# A single line far above any real event (the largest generated line is < 1 KiB) that still keeps the
# test quick: the loader has no line-length rule and nothing in it depends on the size, so 2 MiB shows
# the same path a 2 GB line takes. A 2 GB line cannot be one row at all (a JVM array holds < 2 GiB):
# the text reader fails the bronze job with an error naming the file (see README, "Reliability").
HUGE = 2 * 1024 * 1024
TS_RULE = "invalid ts: not ISO-8601 with a zone offset"
BAD_TIMESTAMPS = (
    "2016-12-31T23:59:60Z",
    "2026-11-20T24:00:00Z",
    "2026-11-20T14:03:07",
)  # leap, 24:00, no zone


def click(event_id: str, **fields: object) -> str:
    return silver_click(event_id, **{"user_agent": None, "referrer": None, **fields})


def transaction(txn_id: str, **fields: str) -> str:
    return silver_transaction(txn_id, **{"ts": TS, "card_number": PAN, **fields})


def chargeback(txn_id: str, ts: str = TS, code: str = "10.4") -> str:
    return f"{txn_id},{ts},{code}"


def reading(machine: str, minute: int, **fields: object) -> str:
    base: dict[str, object] = {
        "machine_id": machine,
        "ts": f"2026-11-20T10:{minute:02d}:00.000+01:00",
        "cycle": 7,
        "setting_1": 0.5,
        "setting_2": 0.9,
        "setting_3": 100,
        "temperature": 80.0,
        "firmware": "4.0.1",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def maintenance(machine: str, ts: str = TS, kind: str = "repair") -> str:
    return f"{machine},{ts},{kind},pump"


def lines(*texts: str, end: str = "\n") -> bytes:
    return "".join(t + end for t in texts).encode()


def hadoop_lines(data: bytes) -> int:
    """Lines Spark's text source reads from ``data``: ``\\n``, ``\\r\\n`` or ``\\r`` ends one."""
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class Kind:
    """One kind of delivery: its files, the lines bronze must hold, and what silver makes of each."""

    name: str
    feed: str
    files: tuple[bytes, ...]  # one landing file each
    loaded: int
    quarantined: dict[str, int] = field(default_factory=dict)  # reason → lines
    header: int = 0
    duplicate: int = 0
    bronze_rows: int | None = None  # None: the lines of every file, as Hadoop splits them
    extension: str | None = None  # None: the feed's own
    after_first_load: Callable[[list[Path]], list[Path]] | None = None  # acts on the delivered files

    def expected_bronze_rows(self) -> int:
        return self.bronze_rows if self.bronze_rows is not None else sum(hadoop_lines(f) for f in self.files)


def rename(paths: list[Path]) -> list[Path]:
    """The delivered file renamed after it was loaded (same content, new name): a new delivery."""
    target = paths[0].with_name(paths[0].name.replace("-0.", "-9."))
    paths[0].rename(target)
    return [target]


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


TX_HEADER, CB_HEADER, MT_HEADER = HEADERS["transactions"], HEADERS["chargebacks"], HEADERS["maintenance"]
UTF16_CLICKS = "".join(line + "\n" for line in (click("c-u16-1"), click("c-u16-2"))).encode("utf-16")
GZIP_CLICKS = gz(lines(click("c-gz-1"), click("c-gz-2")))
GZIP_MAINTENANCE = gz(lines(MT_HEADER, maintenance("M-GZ-1"), maintenance("M-GZ-2")))
NUMERIC_TELEMETRY = ("cycle", *SETTINGS, *SENSORS, "vibration")

KINDS = [
    # ---------------------------------------------------------------- clickstream (JSON lines)
    Kind("c-clean", "clickstream", (lines(click("c-clean-1"), click("c-clean-2")),), loaded=2),
    Kind("c-empty-file", "clickstream", (b"",), loaded=0),
    Kind(
        "c-blank-lines",
        "clickstream",
        (lines(click("c-blank-1"), "", "   \t", click("c-blank-2")),),
        loaded=2,
        quarantined={"empty line": 2},
    ),
    Kind(
        "c-mixed-line-endings",
        "clickstream",
        (f"{click('c-eol-1')}\r\n{click('c-eol-2')}\n{click('c-eol-3')}\r{click('c-eol-4')}".encode(),),
        loaded=4,
    ),
    Kind(
        "c-nul-bytes",
        "clickstream",
        (
            lines(
                click("c-nul-1"),
                click("c-nul-2").replace("c-nul-2", "c-nul\x00-2"),
                "\x00\x00\x00",
                click("c-nul-3")[:-1] + "\x00}",
            ),
        ),
        loaded=1,
        quarantined={"line holds NUL bytes": 3},
    ),
    Kind(
        "c-utf16-file",
        "clickstream",
        (UTF16_CLICKS,),
        loaded=0,
        quarantined={"line is not valid UTF-8": 1, "line holds NUL bytes": 2},
    ),
    Kind(
        "c-gzip-plain-name",
        "clickstream",
        (GZIP_CLICKS,),
        loaded=0,
        quarantined={"line is not valid UTF-8": hadoop_lines(GZIP_CLICKS)},
    ),
    Kind("c-gzip-gz-name", "clickstream", (GZIP_CLICKS,), loaded=2, bronze_rows=2, extension="jsonl.gz"),
    Kind(
        "c-json-array-one-line",
        "clickstream",
        (("[" + ",".join((click("c-arr-1"), click("c-arr-2"))) + "]\n").encode(),),
        loaded=0,
        quarantined={"malformed JSON (not one complete object)": 1},
    ),
    Kind(
        "c-json-array-pretty",
        "clickstream",
        ((json.dumps([json.loads(click("c-arrp-1"))], indent=2) + "\n").encode(),),
        loaded=0,
        quarantined={"malformed JSON (not one complete object)": 14},
    ),
    Kind(
        "c-deeply-nested",
        "clickstream",
        (
            lines(
                click("c-deep-1", extra=json.loads(nested(100))),
                click("c-deep-2")[:-1] + f', "extra": {nested(5000)}}}',
            ),
        ),
        loaded=1,
        quarantined={"malformed JSON (not one complete object)": 1},
    ),
    Kind(
        "c-numeric-overflow",
        "clickstream",
        (
            lines(
                click("c-ovf-1", price="1e400"),
                click("c-ovf-2", event_type="purchase", quantity=99999999999),
                click("c-ovf-3", event_type="rating", rating=1e40),
                click("c-ovf-4", price=123456789012345678901234567890),
            ),
        ),
        loaded=0,
        quarantined={
            "invalid price: not a decimal": 1,
            "invalid price: above 100000": 1,
            "invalid quantity: cart and purchase events need a positive integer": 1,
            "invalid rating: not 1-5": 1,
        },
    ),
    Kind(
        "c-timestamps",
        "clickstream",
        (lines(*(click(f"c-ts-{i}", ts=t) for i, t in enumerate(BAD_TIMESTAMPS))),),
        loaded=0,
        quarantined={TS_RULE: 3},
    ),
    Kind(
        "c-huge-line",
        "clickstream",
        (lines(click("c-huge-1"), "x" * HUGE, click("c-huge-2")),),
        loaded=2,
        quarantined={"malformed JSON (not one complete object)": 1},
    ),
    Kind(
        "c-renamed-after-load",
        "clickstream",
        (lines(click("c-ren-1"), click("c-ren-2")),),
        loaded=2,
        duplicate=2,
        bronze_rows=4,
        after_first_load=rename,
    ),
    Kind(
        "c-same-content-two-names",
        "clickstream",
        (lines(click("c-twice-1"), click("c-twice-2")),) * 2,
        loaded=2,
        duplicate=2,
    ),
    # ---------------------------------------------------------------- transactions (CSV)
    Kind("t-clean", "transactions", (lines(TX_HEADER, transaction("t-clean-1")),), loaded=1, header=1),
    Kind(
        "t-extra-column",
        "transactions",
        (lines(TX_HEADER, transaction("t-extra-1"), transaction("t-extra-2") + ",surplus"),),
        loaded=1,
        header=1,
        quarantined={"malformed CSV (expected 13 fields)": 1},
    ),
    Kind(
        "t-missing-column",
        "transactions",
        (lines(TX_HEADER, transaction("t-miss-1"), transaction("t-miss-2").rsplit(",", 1)[0]),),
        loaded=1,
        header=1,
        quarantined={"malformed CSV (expected 13 fields)": 1},
    ),
    Kind(
        "t-header-repeated",
        "transactions",
        (lines(TX_HEADER, transaction("t-rep-1"), TX_HEADER, transaction("t-rep-2")),),
        loaded=2,
        header=2,
    ),
    Kind(
        "t-crlf",
        "transactions",
        (lines(TX_HEADER, transaction("t-crlf-1"), transaction("t-crlf-2"), end="\r\n"),),
        loaded=2,
        header=1,
    ),
    Kind(
        "t-newline-in-quoted-field",
        "transactions",
        (lines(TX_HEADER, transaction("t-nl-1", merchant_id='"M0000\n0001"')),),
        loaded=0,
        header=1,
        quarantined={"malformed CSV (expected 13 fields)": 2},
    ),
    Kind(
        "t-nul-bytes",
        "transactions",
        (lines(TX_HEADER, transaction("t-nul\x00-1"), transaction("t-nul-2")),),
        loaded=1,
        header=1,
        quarantined={"line holds NUL bytes": 1},
    ),
    Kind(
        "t-numeric-overflow",
        "transactions",
        (
            lines(
                TX_HEADER,
                transaction("t-ovf-1", amount="1e400"),
                transaction("t-ovf-2", amount="123456789012345678901234567890.00"),
                transaction("t-ovf-3", lat="1e400"),
                transaction("t-ovf-4", lon="-1e400"),
            ),
        ),
        loaded=0,
        header=1,
        quarantined={
            "invalid amount: not a decimal": 1,
            "invalid amount: above 1e+06 EUR": 1,
            "invalid lat": 1,
            "invalid lon": 1,
        },
    ),
    Kind(
        "t-timestamps",
        "transactions",
        (lines(TX_HEADER, *(transaction(f"t-ts-{i}", ts=t) for i, t in enumerate(BAD_TIMESTAMPS))),),
        loaded=0,
        header=1,
        quarantined={TS_RULE: 3},
    ),
    Kind(
        "t-same-content-two-names",
        "transactions",
        (lines(TX_HEADER, transaction("t-twice-1")),) * 2,
        loaded=1,
        header=2,
        duplicate=1,
    ),
    # ---------------------------------------------------------------- chargebacks (CSV)
    Kind(
        "b-extra-and-missing-column",
        "chargebacks",
        (lines(CB_HEADER, chargeback("b-em-1"), chargeback("b-em-2") + ",x", "b-em-3,2026-11-20T10:00:00Z"),),
        loaded=1,
        header=1,
        quarantined={"malformed CSV (expected 3 fields)": 2},
    ),
    Kind(
        "b-header-repeated",
        "chargebacks",
        (lines(CB_HEADER, chargeback("b-rep-1"), CB_HEADER, CB_HEADER, chargeback("b-rep-2")),),
        loaded=2,
        header=3,
    ),
    Kind(
        "b-timestamps",
        "chargebacks",
        (lines(CB_HEADER, *(chargeback(f"b-ts-{i}", ts=t) for i, t in enumerate(BAD_TIMESTAMPS))),),
        loaded=0,
        header=1,
        quarantined={"invalid reported_at: not ISO-8601 with a zone offset": 3},
    ),
    Kind(
        "b-semicolon-delimited",
        "chargebacks",
        (lines(CB_HEADER.replace(",", ";"), "b-semi-1;" + TS + ";10.4"),),
        loaded=0,
        quarantined={"malformed CSV (expected 3 fields)": 2},
    ),
    Kind(
        "b-renamed-after-load",
        "chargebacks",
        (lines(CB_HEADER, chargeback("b-ren-1")),),
        loaded=1,
        header=2,
        duplicate=1,
        bronze_rows=4,
        after_first_load=rename,
    ),
    # ---------------------------------------------------------------- telemetry (JSON lines)
    Kind(
        "m-numeric-overflow",
        "telemetry",
        (
            lines(
                *(
                    reading("M-OVF", i, **{name: 99999999999 if name == "cycle" else "1e400"})
                    for i, name in enumerate(NUMERIC_TELEMETRY)
                )
            ),
        ),
        loaded=0,
        quarantined={
            "invalid cycle: not a positive integer": 1,
            **{
                f"invalid {n}: not a finite number": 1 for n in (*SETTINGS, *SENSORS) if n != "vibration_mm_s"
            },
            "invalid vibration_mm_s: not a finite number": 2,  # the field and its pre-4.0 name
        },
    ),
    Kind(
        "m-timestamps",
        "telemetry",
        (lines(*(reading("M-TS", 0, ts=t) for t in BAD_TIMESTAMPS)),),
        loaded=0,
        quarantined={TS_RULE: 3},
    ),
    Kind(
        "m-json-array",
        "telemetry",
        (("[" + reading("M-ARR", 0) + "," + reading("M-ARR", 10) + "]").encode(),),
        loaded=0,
        quarantined={"malformed JSON (not one complete object)": 1},
    ),
    Kind(
        "m-bom-and-crlf",
        "telemetry",
        (b"\xef\xbb\xbf" + lines(reading("M-BOM", 0), reading("M-BOM", 10), end="\r\n"),),
        loaded=2,
    ),
    Kind(
        "m-same-content-two-names",
        "telemetry",
        (lines(reading("M-TWICE", 0), reading("M-TWICE", 10)),) * 2,
        loaded=2,
        duplicate=2,
    ),
    # ---------------------------------------------------------------- maintenance (CSV)
    Kind(
        "x-extra-and-missing-column",
        "maintenance",
        (
            lines(
                MT_HEADER, maintenance("X-EM-1"), maintenance("X-EM-2") + ",extra", "X-EM-3," + TS + ",repair"
            ),
        ),
        loaded=1,
        header=1,
        quarantined={"malformed CSV (expected 4 fields)": 2},
    ),
    Kind(
        "x-header-repeated",
        "maintenance",
        (lines(MT_HEADER, maintenance("X-REP-1"), MT_HEADER, maintenance("X-REP-2")),),
        loaded=2,
        header=2,
    ),
    Kind(
        "x-timestamps",
        "maintenance",
        (lines(MT_HEADER, *(maintenance("X-TS", ts=t) for t in BAD_TIMESTAMPS)),),
        loaded=0,
        header=1,
        quarantined={TS_RULE: 3},
    ),
    Kind(
        "x-gzip-plain-name",
        "maintenance",
        (GZIP_MAINTENANCE,),
        loaded=0,
        quarantined={"line is not valid UTF-8": hadoop_lines(GZIP_MAINTENANCE)},
    ),
    Kind(
        "x-nul-bytes",
        "maintenance",
        (lines(MT_HEADER, maintenance("X-NUL-1"), maintenance("X-NUL\x00-2")),),
        loaded=1,
        header=1,
        quarantined={"line holds NUL bytes": 1},
    ),
    Kind(
        "x-unknown-kind",
        "maintenance",
        (lines(MT_HEADER, maintenance("X-KIND-1", kind="exploded")),),
        loaded=0,
        header=1,
        quarantined={"unknown kind: exploded": 1},
    ),
]


def file_name(kind: Kind, index: int) -> str:
    return f"{kind.feed}-2026-11-20T-{kind.name}-{index}.{kind.extension or EXTENSIONS[kind.feed]}"


@dataclass
class Outcome:
    """What the lake holds for one kind's files."""

    bronze: int = 0
    silver: int = 0
    headers: int = 0
    reasons: Counter = field(default_factory=Counter)


def kind_of(source_file: str) -> str:
    return source_file.rsplit("/", 1)[-1].split("-20T-", 1)[1].rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def corpus(spark, tmp_path_factory):
    """Every kind delivered, loaded to bronze and silver; per kind what each table holds from it."""
    config = tolerant_of_quarantine(
        load_config("test", [f"lakehouse.root={tmp_path_factory.mktemp('corpus')}"])
    )
    delivered: dict[str, list[Path]] = {}
    for kind in KINDS:
        folder = Path(config.landing_path()) / kind.feed
        folder.mkdir(parents=True, exist_ok=True)
        delivered[kind.name] = []
        for i, data in enumerate(kind.files):
            path = folder / file_name(kind, i)
            path.write_bytes(data)
            delivered[kind.name].append(path)
    batches = []
    for feed in FEEDS.values():
        batches.append(run_silver(spark, config, feed))
        actions = [k for k in KINDS if k.feed == feed.name and k.after_first_load]
        if actions:
            for kind in actions:
                assert kind.after_first_load is not None
                kind.after_first_load(delivered[kind.name])
            batches.append(run_silver(spark, config, feed))
    lake = Lakehouse(spark, config)
    outcomes = {k.name: Outcome() for k in KINDS}
    for feed in FEEDS.values():
        bronze = lake.table("bronze", feed.name).read()
        header = F.regexp_replace("value", "^\ufeff", "") == F.lit(HEADERS.get(feed.name, "\x00none"))
        per_file = bronze.groupBy("_source_file").agg(
            F.count(F.lit(1)).alias("n"), F.count(F.when(header, 1)).alias("headers")
        )
        for r in per_file.collect():
            outcomes[kind_of(r._source_file)].bronze += r.n
            outcomes[kind_of(r._source_file)].headers += r.headers
        for r in lake.table("silver", feed.name).read().groupBy("_source_file").count().collect():
            outcomes[kind_of(r._source_file)].silver += r["count"]
    for r in lake.table("ops", "quarantine").read().groupBy("source_file", "reason").count().collect():
        outcomes[kind_of(r.source_file)].reasons[r.reason] += r["count"]
    runs = lake.table("ops", "silver_batches").read().collect()
    return outcomes, batches, runs


def test_the_corpus_has_at_least_thirty_kinds_over_the_five_feeds():
    assert len({k.name for k in KINDS}) == len(KINDS) >= 30
    assert {k.feed for k in KINDS} == set(FEEDS)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_every_line_of_every_kind_is_accounted_for_as_expected(corpus, kind):
    outcomes, _, _ = corpus
    got = outcomes[kind.name]
    assert got.bronze == kind.expected_bronze_rows(), "bronze holds every delivered line once"
    assert got.silver == kind.loaded
    assert got.headers == kind.header
    assert dict(got.reasons) == kind.quarantined
    duplicates = got.bronze - got.silver - sum(got.reasons.values()) - got.headers
    assert duplicates == kind.duplicate, "loaded + quarantined + header + duplicate = bronze lines"


def test_every_batch_balances_and_adds_up_to_the_kinds(corpus):
    _, batches, runs = corpus
    for run in runs:
        assert run.status == "ok"
        assert run.rows_in == run.rows_loaded + run.rows_duplicate + run.rows_quarantined + run.rows_header
    totals = Counter()
    for load in batches:
        totals.update(load.counts)
    assert dict(totals) == {
        "loaded": sum(k.loaded for k in KINDS),
        "quarantined": sum(sum(k.quarantined.values()) for k in KINDS),
        "header": sum(k.header for k in KINDS),
        "duplicate": sum(k.duplicate for k in KINDS),
    }
    outcomes, _, _ = corpus
    lost = sum(max(k.expected_bronze_rows() - outcomes[k.name].bronze, 0) for k in KINDS)
    doubled = sum(max(outcomes[k.name].bronze - k.expected_bronze_rows(), 0) for k in KINDS)
    record(
        f"bad input corpus: {len(KINDS)} kinds over 5 feeds",
        len(batches),
        lost,
        doubled,
        "each line loaded, quarantined with its reason, a header or a duplicate, as expected",
    )
