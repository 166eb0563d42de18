"""Card transactions and chargebacks landing feeds (banking): CSV files with a header line.

Files: ``<landing>/transactions/transactions-<YYYY-MM-DD>-<nnnnn>.csv`` (4 delivery windows of 6 h
per day, times ``ceil(scale / 25)`` shards) and ``<landing>/chargebacks/chargebacks-<YYYY-MM-DD>-00000.csv``
(one file per day). Fields are comma-separated, quoted (RFC 4180) only when they contain a comma or
a quote; an empty field is a missing value.

**transactions**

- txn_id (string): ``tx`` + 16 hex digits, unique per transaction (a duplicate delivery repeats it)
- ts (string): authorisation time, ISO-8601 UTC with ``Z`` and ms (``2026-11-20T13:45:12.123Z``), terminal
  clock
- card_number (string): 16-digit PAN, Luhn-valid, one per account (PII: tokenize downstream)
- account_id (string): ``A00001234``
- merchant_id (string): ``M00012345``
- merchant_category (string): ISO 18245 MCC, 4 digits (see ``MCCS``; 6011 = ATM)
- amount (decimal): amount in ``currency``: 2 decimals, 0 for JPY
- currency (string): ISO 4217 code of the merchant's country (fixed rates to EUR in ``COUNTRIES``)
- channel (string): ``pos`` (card at a terminal), ``ecom`` (online) or ``atm``
- country (string): ISO 3166 alpha-2 country of the merchant
- lat, lon (decimal): where the card was used, 4 decimals: terminal location (pos, atm) or the buyer's IP
  geolocation (ecom)
- card_present (boolean): ``true`` for pos and atm, ``false`` for ecom

**chargebacks** (append-only: a reversal is a later row for the same ``txn_id``)

- txn_id (string): the disputed transaction
- reported_at (string): when the dispute (or its reversal) was filed, ISO-8601 UTC (``2026-12-03T09:12:44Z``)
- reason_code (string): Visa-style dispute reason: ``10.3`` fraud, card present; ``10.4`` fraud, card absent;
  ``13.1`` merchandise not received; ``13.3`` not as described; ``REVERSED`` = the earlier chargeback of this
  txn_id was withdrawn/lost (the transaction is then not disputed)

Volume: 4,000 × scale legitimate transaction slots per day, thinned by weekday (Mon–Wed 90 %,
Thu 95 %, Fri–Sat 100 %, Sun 80 %): about 3,700 × scale transactions a day plus fraud; about
18 × scale chargeback rows a day. The processor exports a transaction 1–30 min after ``ts``.

Entities: ``3000 × scale`` accounts in blocks by home country (weights in ``COUNTRIES``), one card
each; in every country ``24 × scale`` merchants split over the MCCs by ``merchant_share`` (at least
one per MCC), located around the country centre (within ``radius_deg``); popular merchants are
chosen more often (Zipf 1.2 within an MCC).

Legitimate behaviour: an account is drawn with ``⌊n · u^1.3⌋`` permuted (some cards are used much
more); on 2 % of account-days the cardholder is travelling in another country (all that day's
card-present spend is there); channel pos 68 %, ecom 27 %, atm 5 %; card-present spend happens in
the current country, online spend at a home-country merchant (80 %) or anywhere (20 %); MCCs by the
``pos_weight``/``ecom_weight`` columns of ``MCCS``; amount in EUR ``median(MCC) · exp(0.7·N(0,1))``
(ATM: multiples of 20); local time 00:00–06:00 for 4 % of transactions, else 06:00–24:00 peaking
~15:00, in the cardholder's current time zone.

Fraud (about 0.5 % of transactions in the long run, 0.3–0.7 % over a few days at scale 1; exact
generating rules; cases per scale unit and day, the day's count drawn as ``⌊rate·scale + u⌋``):

- card_testing (rate/day 0.5 cases): a card gets 6–14 small ecom payments (0.50–5.00 EUR) 20–150 s apart at
  digital-goods/direct-marketing merchants (5816, 5967) in random countries, then 1–2 large ecom buys
  (150–1,500 EUR, electronics 5732 / jewellery 5944) 1–6 h later; IP location in a country >5,000 km from home
- impossible_travel (rate/day 2.0 cases): a normal card-present buy at home (legitimate), then 20–180 min
  later a card-present buy (100–900 EUR; 5732, 5944, 5311) in a country >5,000 km away (the fraud)
- night_risky_mcc (rate/day 2.0 cases): 1–3 ecom payments (150–2,000 EUR) at risky MCCs (7995 gambling, 6051
  quasi-cash, 4829 money transfer, 5967) between 00:30 and 05:00 in the cardholder's home time, 2–20 min
  apart, IP location far from home
- compromised_merchant (rate/day 0.4 waves): a fuel/restaurant/grocery merchant (5541, 5812, 5411) skims 5–12
  local cards on one day (those visits are legitimate); each card then has 1–2 fraudulent buys 1–10 days later
  (200–2,500 EUR), half online far from home, half card-present in a far country

``is_fraud`` is not in the landing file: the label comes from chargebacks.

Chargebacks (exact rules): a fraudulent transaction gets a chargeback with probability 0.9, or 0.4
when under 5 EUR (tiny card tests often go unnoticed); reason ``10.3`` if the card was present, else
``10.4``. A legitimate transaction gets a false chargeback with probability 0.0005 (reason 10.4
50 %, 13.1 30 %, 13.3 20 %). ``reported_at`` = transaction time + 2–45 days (``2 + 43·u²``).
Reversals: 3 % of fraud chargebacks and 60 % of false ones get a ``REVERSED`` row 7–30 days after
the chargeback. Chargebacks are delivered 1–12 h after ``reported_at``.

Dirt (rates per row; malformed/missing/wrong type are exclusive):

- malformed line (transactions 0.1 %; chargebacks 0.5 %): first 20–80 % of the line, or garbage (HTML error
  page, binary junk, ``;;;;``)
- missing field (transactions 0.4 %; chargebacks 0.5 %): transactions: one of merchant_id, amount, ts, lat+lon
  empty; chargebacks: reason_code empty
- wrong type (transactions 0.4 %; chargebacks 1 %): transactions: amount with a decimal comma (``"12,50"``,
  quoted), amount ``N/A``, or ts as ``20/11/2026 13:45:12``; chargebacks: reported_at as ``20/11/2026 13:45``
- duplicate delivery (transactions 0.3 %; chargebacks 1 %): the same line again in a later file (6 h later;
  chargebacks: next day)
- late delivery (transactions 0.2 %; chargebacks –): delivered 1–2 days (+ up to 1 day) after ``ts``
- clock skew (transactions 1 % of merchants; chargebacks –): the terminal clock of pos/atm transactions is off
  by ±1–30 min
- format variation (transactions 1 %; chargebacks –): card_number written in groups of four (``4532 0112 3456
  7890``)
- reversed chargebacks (transactions –; chargebacks see above): a later ``REVERSED`` row for the same txn_id
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeml.synthetic.core import (
    DAY_US,
    HOUR_US,
    MINUTE_US,
    SECOND_US,
    DirtRates,
    FeedLines,
    Sql,
    Window,
    array_sql,
    as_us,
    below,
    between,
    block_of,
    coprime_stride,
    cumulative_offsets,
    day_index_rows,
    dirt_kind,
    draw,
    draw_column,
    draw_normal,
    fixed,
    hex_id,
    int_between,
    iso_timestamp,
    local_clock,
    lookup,
    malformed,
    round_to,
    row_key,
    select_sql,
    shards_for,
    sql_lit,
    stochastic_count,
    uniform,
    weekday,
    weighted_choice,
    with_csv_line,
    with_draws,
    with_duplicates,
    with_sql,
    zipf_index,
)


@dataclass(frozen=True)
class Country:
    code: str
    currency: str
    lat: float
    lon: float
    radius_deg: float
    utc_offset_min: int
    home_weight: float
    per_eur: float  # units of ``currency`` per EUR (fixed rate)
    decimals: int


COUNTRIES: tuple[Country, ...] = (
    Country("US", "USD", 39.8, -98.6, 8.0, -300, 0.22, 1.08, 2),
    Country("GB", "GBP", 52.5, -1.5, 1.5, 0, 0.12, 0.85, 2),
    Country("DE", "EUR", 51.2, 10.4, 2.0, 60, 0.14, 1.0, 2),
    Country("FR", "EUR", 46.6, 2.4, 2.0, 60, 0.10, 1.0, 2),
    Country("ES", "EUR", 40.4, -3.7, 2.0, 60, 0.06, 1.0, 2),
    Country("IT", "EUR", 42.8, 12.5, 2.0, 60, 0.06, 1.0, 2),
    Country("NL", "EUR", 52.2, 5.3, 0.7, 60, 0.05, 1.0, 2),
    Country("BR", "BRL", -14.2, -51.9, 6.0, -180, 0.05, 5.9, 2),
    Country("IN", "INR", 21.0, 78.0, 5.0, 330, 0.05, 90.0, 2),
    Country("JP", "JPY", 36.2, 138.3, 2.0, 540, 0.05, 160.0, 0),
    Country("AU", "AUD", -25.3, 133.8, 6.0, 600, 0.03, 1.65, 2),
    Country("ZA", "ZAR", -30.6, 22.9, 3.0, 120, 0.02, 20.0, 2),
    Country("SG", "SGD", 1.35, 103.8, 0.1, 480, 0.02, 1.45, 2),
    Country("MX", "MXN", 23.6, -102.5, 4.0, -360, 0.03, 19.0, 2),
)


@dataclass(frozen=True)
class Mcc:
    code: str
    description: str
    merchant_share: float  # share of each country's merchants
    pos_weight: float  # share of legitimate card-present spend
    ecom_weight: float  # share of legitimate online spend
    median_eur: float
    risky: bool


MCCS: tuple[Mcc, ...] = (
    Mcc("5411", "grocery stores", 0.16, 0.22, 0.05, 35.0, False),
    Mcc("5812", "restaurants", 0.14, 0.18, 0.0, 28.0, False),
    Mcc("5814", "fast food", 0.08, 0.12, 0.0, 11.0, False),
    Mcc("5541", "service stations", 0.08, 0.12, 0.0, 55.0, False),
    Mcc("5912", "drug stores", 0.05, 0.06, 0.03, 22.0, False),
    Mcc("5311", "department stores", 0.05, 0.06, 0.08, 70.0, False),
    Mcc("5691", "clothing stores", 0.06, 0.06, 0.14, 60.0, False),
    Mcc("5732", "electronics stores", 0.05, 0.03, 0.10, 220.0, False),
    Mcc("5944", "jewellery stores", 0.02, 0.01, 0.01, 350.0, False),
    Mcc("4111", "commuter transport", 0.04, 0.07, 0.03, 4.0, False),
    Mcc("4121", "taxis and ride hailing", 0.03, 0.03, 0.08, 18.0, False),
    Mcc("7011", "hotels", 0.03, 0.02, 0.06, 140.0, False),
    Mcc("5999", "miscellaneous retail", 0.08, 0.04, 0.20, 40.0, False),
    Mcc("5816", "digital goods: games", 0.04, 0.0, 0.15, 12.0, True),
    Mcc("5967", "direct marketing: inbound telemarketing", 0.02, 0.0, 0.02, 30.0, True),
    Mcc("7995", "betting and casino gambling", 0.02, 0.0, 0.02, 60.0, True),
    Mcc("4829", "money transfer", 0.01, 0.0, 0.01, 150.0, True),
    Mcc("6051", "quasi-cash (crypto, money orders)", 0.01, 0.0, 0.01, 120.0, True),
    Mcc("6011", "ATM cash withdrawal", 0.03, 0.0, 0.0, 120.0, False),
)
ATM_MCC = "6011"


@dataclass(frozen=True)
class FraudPattern:
    name: str
    cases_per_scale_day: float


TXN_DIRT = DirtRates(malformed=0.001, missing=0.004, wrong_type=0.004, duplicate=0.003)
CHARGEBACK_DIRT = DirtRates(malformed=0.005, missing=0.005, wrong_type=0.01, duplicate=0.01)
CARD_TESTING = FraudPattern("card_testing", 0.5)
IMPOSSIBLE_TRAVEL = FraudPattern("impossible_travel", 2.0)
NIGHT_RISKY = FraudPattern("night_risky_mcc", 2.0)
MERCHANT_WAVE = FraudPattern("compromised_merchant", 0.4)


@dataclass(frozen=True)
class BankingRules:
    """Every rate and rule of the transactions and chargebacks generators (see the module docstring)."""

    accounts_per_scale: int = 3_000
    merchants_per_country_per_scale: int = 24
    txns_per_scale_day: int = 4_000
    weekday_keep: tuple[float, ...] = (0.9, 0.9, 0.9, 0.95, 1.0, 1.0, 0.8)
    account_activity_exponent: float = 1.3
    merchant_zipf_exponent: float = 1.2
    bins: tuple[str, ...] = ("453201", "455673", "492181", "517805", "532610", "545720")
    pan_multiplier: int = 738_225_013
    pan_offset: int = 123_456_789
    travel_rate: float = 0.02
    channel_mix: tuple[tuple[str, float], ...] = (("pos", 0.68), ("ecom", 0.27), ("atm", 0.05))
    ecom_home_share: float = 0.8
    amount_sigma: float = 0.7
    atm_step_eur: float = 20.0
    night_share: float = 0.04
    night_end_hour: int = 6
    terminal_jitter_deg: float = 0.01
    far_km: float = 5_000.0
    card_testing: FraudPattern = CARD_TESTING
    impossible_travel: FraudPattern = IMPOSSIBLE_TRAVEL
    night_risky: FraudPattern = NIGHT_RISKY
    merchant_wave: FraudPattern = MERCHANT_WAVE
    card_test_small: tuple[int, int] = (6, 14)
    card_test_big: tuple[int, int] = (1, 2)
    card_test_small_eur: tuple[float, float] = (0.5, 5.0)
    card_test_big_eur: tuple[float, float] = (150.0, 1_500.0)
    card_test_gap_seconds: tuple[int, int] = (20, 150)
    card_test_big_delay_hours: tuple[int, int] = (1, 6)
    card_test_small_mccs: tuple[tuple[str, float], ...] = (("5816", 0.7), ("5967", 0.3))
    big_ticket_mccs: tuple[tuple[str, float], ...] = (("5732", 0.6), ("5944", 0.4))
    travel_fraud_mccs: tuple[tuple[str, float], ...] = (("5732", 0.4), ("5944", 0.3), ("5311", 0.3))
    travel_fraud_eur: tuple[float, float] = (100.0, 900.0)
    travel_gap_minutes: tuple[int, int] = (20, 180)
    travel_local_hours: tuple[float, float] = (8.0, 20.0)
    night_mccs: tuple[tuple[str, float], ...] = (("7995", 0.35), ("6051", 0.25), ("4829", 0.2), ("5967", 0.2))
    night_txns: tuple[int, int] = (1, 3)
    night_window_minutes: tuple[int, int] = (30, 300)
    night_gap_minutes: tuple[int, int] = (2, 20)
    night_eur: tuple[float, float] = (150.0, 2_000.0)
    wave_mccs: tuple[tuple[str, float], ...] = (("5541", 0.5), ("5812", 0.3), ("5411", 0.2))
    wave_cards: tuple[int, int] = (5, 12)
    wave_skim_hours: tuple[float, float] = (7.0, 22.0)
    wave_frauds_per_card: tuple[int, int] = (1, 2)
    wave_delay_days: tuple[int, int] = (1, 10)
    wave_eur: tuple[float, float] = (200.0, 2_500.0)
    wave_online_share: float = 0.5
    wave_online_mccs: tuple[tuple[str, float], ...] = (("5732", 0.4), ("5944", 0.3), ("5999", 0.3))
    chargeback_rate_fraud: float = 0.9
    chargeback_rate_small_fraud: float = 0.4
    small_fraud_eur: float = 5.0
    false_chargeback_rate: float = 0.0005
    false_reasons: tuple[tuple[str, float], ...] = (("10.4", 0.5), ("13.1", 0.3), ("13.3", 0.2))
    chargeback_delay_days: tuple[float, float] = (2.0, 45.0)
    reversal_rate_fraud: float = 0.03
    reversal_rate_false: float = 0.6
    reversal_delay_days: tuple[int, int] = (7, 30)
    chargeback_latency_hours: tuple[int, int] = (1, 12)
    txn_latency_seconds: tuple[int, int] = (60, 1_800)
    late_rate: float = 0.002
    late_days: tuple[int, int] = (1, 2)
    duplicate_delay_hours: int = 6
    txn_dirt: DirtRates = TXN_DIRT
    cb_dirt: DirtRates = CHARGEBACK_DIRT
    txn_missing_fields: tuple[str, ...] = ("merchant_id", "amount", "ts", "location")
    txn_wrong_kinds: tuple[str, ...] = ("amount_comma", "amount_na", "ts_dmy")
    card_spaces_rate: float = 0.01
    skewed_merchant_rate: float = 0.01
    max_skew_minutes: int = 30
    windows_per_day: int = 4
    scale_per_shard: int = 25
    rows_per_partition: int = 50_000

    @property
    def txn_lookback_days(self) -> int:
        """Transaction days before the window that can still be delivered in it."""
        return self.late_days[1] + 2

    @property
    def wave_lookback_days(self) -> int:
        return self.wave_delay_days[1] + 1

    @property
    def chargeback_lookback_days(self) -> int:
        return math.ceil(self.chargeback_delay_days[1]) + self.reversal_delay_days[1] + 2


RULES = BankingRules()
TXN_COLUMNS = (
    "txn_id",
    "ts",
    "card_number",
    "account_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "channel",
    "country",
    "lat",
    "lon",
    "card_present",
)
CHARGEBACK_COLUMNS = ("txn_id", "reported_at", "reason_code")
# The typed transaction frame every pattern produces (ground truth: is_fraud, pattern).
TXN_FRAME = (
    "txn_id",
    "ts_us",
    "account",
    "merchant",
    "channel",
    "amount_eur",
    "lat",
    "lon",
    "is_fraud",
    "pattern",
)


# ----------------------------------------------------------------------------------------------
# entity layout: ids are blocks, so "an account of country c" or "a merchant with MCC m in c" is a draw


@dataclass(frozen=True)
class BankLayout:
    """Block structure of account and merchant numbers for one scale (computed on the driver)."""

    account_offsets: tuple[int, ...]  # accounts of country i: [offsets[i], offsets[i+1])
    mcc_offsets: tuple[int, ...]  # merchants of MCC j within a country: [offsets[j], offsets[j+1])
    account_stride: int

    @property
    def n_accounts(self) -> int:
        return self.account_offsets[-1]

    @property
    def merchants_per_country(self) -> int:
        return self.mcc_offsets[-1]


def layout_for(scale: int, rules: BankingRules = RULES) -> BankLayout:
    accounts = rules.accounts_per_scale * scale
    total_weight = sum(c.home_weight for c in COUNTRIES)
    per_country = [max(1, round(accounts * c.home_weight / total_weight)) for c in COUNTRIES]
    merchants = rules.merchants_per_country_per_scale * scale
    per_mcc = [max(1, round(merchants * m.merchant_share)) for m in MCCS]
    offsets = cumulative_offsets(per_country)
    return BankLayout(tuple(offsets), tuple(cumulative_offsets(per_mcc)), coprime_stride(offsets[-1]))


def far_countries(min_km: float) -> list[list[int]]:
    """For each country, the countries whose centres are more than ``min_km`` away (great circle)."""

    def km(a: Country, b: Country) -> float:
        p1, p2 = math.radians(a.lat), math.radians(b.lat)
        dp, dl = p2 - p1, math.radians(b.lon - a.lon)
        h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * 6371.0 * math.asin(math.sqrt(h))

    return [[j for j, b in enumerate(COUNTRIES) if km(a, b) > min_km] for a in COUNTRIES]


def country_attr(name: str, country: Sql) -> Sql:
    """Attribute ``name`` of the ``COUNTRIES`` entry with index ``country``."""
    return lookup([getattr(c, name) for c in COUNTRIES], country)


def mcc_index(code: str) -> int:
    return next(i for i, m in enumerate(MCCS) if m.code == code)


def mcc_draw(weights: Sequence[tuple[str, float]] | Mapping[str, float], u: Sql) -> Sql:
    """An MCC index drawn with the given weights per MCC code."""
    pairs = weights.items() if isinstance(weights, Mapping) else weights
    return weighted_choice({mcc_index(code): w for code, w in pairs}, u)


def far_country(home: Sql, u: Sql, rules: BankingRules = RULES) -> Sql:
    """A country more than ``far_km`` from ``home`` (any other country if none is that far)."""
    far = far_countries(rules.far_km)
    rows = [f or [j for j in range(len(COUNTRIES)) if j != i] for i, f in enumerate(far)]
    table = f"array({', '.join(array_sql(r) for r in rows)})"
    row = f"element_at({table}, CAST({home} AS INT) + 1)"
    return f"element_at({row}, CAST({below(f'size({row})', u)} AS INT) + 1)"


def account_in(country: Sql, u: Sql, layout: BankLayout) -> Sql:
    """An account whose home is ``country``."""
    offsets = layout.account_offsets
    sizes = [b - a for a, b in pairwise(offsets)]
    return f"({lookup(offsets[:-1], country)} + {below(lookup(sizes, country), u)})"


def merchant_in(country: Sql, mcc: Sql, u: Sql, layout: BankLayout, rules: BankingRules = RULES) -> Sql:
    """A merchant of MCC index ``mcc`` in ``country``; popular merchants (Zipf) are drawn more often."""
    offsets = layout.mcc_offsets
    sizes = [b - a for a, b in pairwise(offsets)]
    rank = zipf_index(u, lookup(sizes, mcc), rules.merchant_zipf_exponent)
    return f"({country} * {layout.merchants_per_country} + {lookup(offsets[:-1], mcc)} + {rank})"


def merchant_country(merchant: Sql, layout: BankLayout) -> Sql:
    return f"({merchant} div {layout.merchants_per_country})"


def merchant_mcc(merchant: Sql, layout: BankLayout) -> Sql:
    return block_of(f"pmod({merchant}, {layout.merchants_per_country})", layout.mcc_offsets)


def home_country(account: Sql, layout: BankLayout) -> Sql:
    return block_of(account, layout.account_offsets)


def location(u: Sql, country: Sql, axis: Literal["lat", "lon"]) -> Sql:
    """A coordinate near the centre of ``country`` (uniform within its radius) for a uniform ``u``."""
    return f"({country_attr(axis, country)} + ({u} * 2.0D - 1.0D) * {country_attr('radius_deg', country)})"


def merchant_location(seed: int, merchant: Sql, layout: BankLayout, axis: Literal["lat", "lon"]) -> Sql:
    return location(uniform(seed, f"merchant/{axis}", merchant), merchant_country(merchant, layout), axis)


def terminal_location(
    seed: int,
    merchant: Sql,
    noise: Sql,
    layout: BankLayout,
    axis: Literal["lat", "lon"],
    rules: BankingRules = RULES,
) -> Sql:
    """Where a card-present payment happened: the merchant's location plus a few hundred metres."""
    return (f"({merchant_location(seed, merchant, layout, axis)} + {noise} * "
        f"{sql_lit(rules.terminal_jitter_deg)})")


def amount_eur(mcc: Sql, noise: Sql, rules: BankingRules = RULES) -> Sql:
    """Typical spend at ``mcc``: ``median · exp(sigma · noise)`` EUR (ATM: multiples of 20)."""
    raw = f"({lookup([m.median_eur for m in MCCS], mcc)} * exp({sql_lit(rules.amount_sigma)} * {noise}))"
    step = sql_lit(rules.atm_step_eur)
    atm = f"greatest(round({raw} / {step}), 1.0D) * {step}"
    return round_to(f"CASE WHEN {mcc} = {mcc_index(ATM_MCC)} THEN {atm} ELSE {raw} END", 2)


def uniform_amount(lo_hi: tuple[float, float], u: Sql) -> Sql:
    return round_to(between(lo_hi[0], lo_hi[1], u), 2)


def local_day_time(day: Sql, local_us: Sql, country: Sql) -> Sql:
    """UTC microseconds of ``local_us`` after local midnight of ``day`` in ``country``'s time zone."""
    return (f"({day} * {DAY_US}L + CAST({local_us} AS BIGINT) - "
        f"{as_us(country_attr('utc_offset_min', country), MINUTE_US)})")


def hours_us(hours: Sql) -> Sql:
    return f"CAST(floor({hours} * {sql_lit(float(HOUR_US))}) AS BIGINT)"


# ----------------------------------------------------------------------------------------------
# transactions: legitimate spend plus four fraud patterns, all in the TXN_FRAME shape


def kept_legit(seed: int, rules: BankingRules = RULES) -> Sql:
    """Weekday thinning of legitimate transaction slots ``(day, idx)``."""
    return f"{uniform(seed, 'txn/keep', 'day', 'idx')} < {lookup(rules.weekday_keep, weekday('day'))}"


def legit_details(df: DataFrame, seed: int, layout: BankLayout, rules: BankingRules = RULES) -> DataFrame:
    """The legitimate transaction of slot ``(day, idx)``: a pure function of the slot."""
    df = with_sql(df, {"slot_rk": row_key(seed, "txn", "day", "idx")})
    df = with_draws(df, "slot_rk", "channel", "mcc-pos", "mcc-ecom")

    def u(salt: str) -> Sql:
        return draw("slot_rk", salt)

    n = layout.n_accounts
    activity = f"pow({u('account')}, {sql_lit(rules.account_activity_exponent)})"
    pos_weights = {i: m.pos_weight for i, m in enumerate(MCCS)}
    ecom_weights = {i: m.ecom_weight for i, m in enumerate(MCCS)}
    night_end = float(rules.night_end_hour)
    local_hours = (
        f"CASE WHEN {u('night')} < {sql_lit(rules.night_share)} THEN {u('t-night')} * {sql_lit(night_end)} "
        f"ELSE {sql_lit(night_end)} + ({u('t1')} + {u('t2')}) / 2.0D * {sql_lit(24.0 - night_end)} END"
    )
    df = with_sql(
        df,
        {
            "txn_id": f"concat('tx', {hex_id(seed, 'txn/id', 'day', 'idx')})",
            "account": f"pmod({below(n, activity)} * {layout.account_stride}L, {n}L)",
            "channel": weighted_choice(dict(rules.channel_mix), draw_column("channel")),
            "ecom_country": f"CASE WHEN {u('ecom-home')} < {sql_lit(rules.ecom_home_share)} THEN -1 "
            f"ELSE {below(len(COUNTRIES), u('ecom-country'))} END",
            "mcc_pos": weighted_choice(pos_weights, draw_column("mcc-pos")),
            "mcc_ecom": weighted_choice(ecom_weights, draw_column("mcc-ecom")),
            "local_us": hours_us(local_hours),
            "merchant_u": u("merchant"),
            "amount_noise": draw_normal("slot_rk", "amount"),
            "dlat": draw_normal("slot_rk", "dlat"),
            "dlon": draw_normal("slot_rk", "dlon"),
        },
    )
    df = with_sql(
        df,
        {
            "home": home_country("account", layout),
            "travel_to": below(len(COUNTRIES), uniform(seed, "txn/travel-to", "account", "day")),
            "travelling": f"{uniform(seed, 'txn/travel', 'account', 'day')} < {sql_lit(rules.travel_rate)}",
            "mcc": f"CASE channel WHEN 'atm' THEN {mcc_index(ATM_MCC)} WHEN 'pos' THEN mcc_pos ELSE mcc_ecom "
                   "END",
        },
    )
    df = with_sql(df, {"current": "CASE WHEN travelling AND travel_to != home THEN travel_to ELSE home END"})
    df = with_sql(
        df,
        {
            "m_country": "CASE WHEN channel != 'ecom' THEN current WHEN ecom_country < 0 THEN home ELSE "
                         "ecom_country END",
            "ts_us": local_day_time("day", "local_us", "current"),
            "amount_eur": amount_eur("mcc", "amount_noise", rules),
        },
    )
    df = with_sql(df, {"merchant": merchant_in("m_country", "mcc", "merchant_u", layout, rules)})
    buyer = {
        axis: location(uniform(seed, f"account/{axis}", "account"), "current", axis)
        for axis in ("lat", "lon")
    }
    return select_sql(
        df,
        {
            **{name: name for name in TXN_FRAME[:6]},
            "lat": f"CASE WHEN channel = 'ecom' THEN {buyer['lat']} "
            f"ELSE {terminal_location(seed, 'merchant', 'dlat', layout, 'lat')} END",
            "lon": f"CASE WHEN channel = 'ecom' THEN {buyer['lon']} "
            f"ELSE {terminal_location(seed, 'merchant', 'dlon', layout, 'lon')} END",
            "is_fraud": "false",
            "pattern": "'legit'",
        },
    )


def legit_transactions(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    layout = layout_for(scale, rules)
    per_day = rules.txns_per_scale_day * scale
    slots = day_index_rows(spark, first_day, last_day, per_day, rules.rows_per_partition)
    return legit_details(slots.filter(F.expr(kept_legit(seed, rules))), seed, layout, rules)


def case_rows(
    spark: SparkSession, seed: int, pattern: FraudPattern, scale: int, first_day: int, last_day: int
) -> DataFrame:
    """Rows ``(day, case, case_rk)``: ``⌊rate·scale + u⌋`` cases of ``pattern`` per day."""
    expected = pattern.cases_per_scale_day * scale
    rows = day_index_rows(spark, first_day, last_day, math.floor(expected) + 1, 1_000_000)
    count = stochastic_count(expected, uniform(seed, f"{pattern.name}/count", "day"))
    rows = rows.filter(F.expr(f"idx < {count}")).withColumnRenamed("idx", "case")
    return with_sql(rows, {"case_rk": row_key(seed, pattern.name, "day", "case")})


def fraud_rows(df: DataFrame, pattern: str, is_fraud: Sql) -> DataFrame:
    return select_sql(
        df, {**{name: name for name in TXN_FRAME[:8]}, "is_fraud": is_fraud, "pattern": f"'{pattern}'"}
    )


def explode_rows(df: DataFrame, count: Sql, seed: int, salt: str) -> DataFrame:
    """One row per ``k`` in ``0..count-1`` for each case, with a row key ``rk`` of (case key, k)."""
    df = df.withColumn("k", F.explode(F.expr(f"sequence(0, CAST({count} AS INT) - 1)")))
    return with_sql(df, {"rk": row_key(seed, salt, "case_rk", "k")})


def card_testing(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    """Bursts of tiny online payments from far away, then one or two big ones."""
    layout = layout_for(scale, rules)
    p = rules.card_testing
    cases = case_rows(spark, seed, p, scale, first_day, last_day)
    cases = with_sql(
        cases,
        {
            "account": below(layout.n_accounts, draw("case_rk", "account")),
            "t0": f"day * {DAY_US}L + CAST(floor({draw('case_rk', 't0')} * {sql_lit(float(DAY_US))}) AS "
                  "BIGINT)",
            "n_small": int_between(rules.card_test_small, draw("case_rk", "n-small")),
            "n_big": int_between(rules.card_test_big, draw("case_rk", "n-big")),
            "gap_us": f"CAST(floor({between(*rules.card_test_gap_seconds, draw('case_rk', 'gap'))} * "
                      f"{SECOND_US}) AS BIGINT)",
        },
    )
    cases = with_sql(
        cases, {"fraudster": far_country(home_country("account", layout), draw("case_rk", "far"), rules)}
    )
    rows = explode_rows(cases, "n_small + n_big", seed, p.name)

    def u(salt: str) -> Sql:
        return draw("rk", salt)

    small = "k < n_small"
    rows = with_sql(
        rows,
        {
            "txn_id": "concat('tx', lower(lpad(hex(rk), 16, '0')))",
            "ts_us": f"t0 + k * gap_us + CASE WHEN {small} THEN 0L "
            f"ELSE {hours_us(between(*rules.card_test_big_delay_hours, u('big-delay')))} END",
            "mcc": f"CASE WHEN {small} THEN {mcc_draw(rules.card_test_small_mccs, u('mcc'))} "
            f"ELSE {mcc_draw(rules.big_ticket_mccs, u('mcc'))} END",
            "channel": "'ecom'",
            "amount_eur": f"CASE WHEN {small} THEN {uniform_amount(rules.card_test_small_eur, u('amount'))} "
            f"ELSE {uniform_amount(rules.card_test_big_eur, u('amount'))} END",
            "lat": location(draw("case_rk", "lat"), "fraudster", "lat"),
            "lon": location(draw("case_rk", "lon"), "fraudster", "lon"),
            "m_country": below(len(COUNTRIES), u("m-country")),
        },
    )
    rows = with_sql(rows, {"merchant": merchant_in("m_country", "mcc", u("merchant"), layout, rules)})
    return fraud_rows(rows, p.name, "true")


def impossible_travel(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    """A card-present buy at home, then one in a far country minutes to hours later (the fraud)."""
    layout = layout_for(scale, rules)
    p = rules.impossible_travel
    cases = case_rows(spark, seed, p, scale, first_day, last_day)
    cases = with_sql(cases, {"account": below(layout.n_accounts, draw("case_rk", "account"))})
    cases = with_sql(cases, {"home": home_country("account", layout)})
    local_us = hours_us(between(*rules.travel_local_hours, draw("case_rk", "t0")))
    cases = with_sql(
        cases,
        {
            "far": far_country("home", draw("case_rk", "far"), rules),
            "t0": local_day_time("day", local_us, "home"),
            "gap_us": as_us(int_between(rules.travel_gap_minutes, draw("case_rk", "gap")), MINUTE_US),
        },
    )
    rows = explode_rows(cases, "2", seed, p.name)

    def u(salt: str) -> Sql:
        return draw("rk", salt)

    anchor = "k = 0"
    pos_weights = {m.code: m.pos_weight for m in MCCS}
    rows = with_sql(
        rows,
        {
            "txn_id": "concat('tx', lower(lpad(hex(rk), 16, '0')))",
            "ts_us": "t0 + k * gap_us",
            "mcc": f"CASE WHEN {anchor} THEN {mcc_draw(pos_weights, u('mcc'))} ELSE "
                   f"{mcc_draw(rules.travel_fraud_mccs, u('mcc'))} END",
            "channel": "'pos'",
            "where": f"CASE WHEN {anchor} THEN home ELSE far END",
            "noise": draw_normal("rk", "amount"),
        },
    )
    rows = with_sql(
        rows,
        {
            "merchant": merchant_in("where", "mcc", u("merchant"), layout, rules),
            "amount_eur": f"CASE WHEN {anchor} THEN {amount_eur('mcc', 'noise', rules)} "
            f"ELSE {uniform_amount(rules.travel_fraud_eur, u('amount'))} END",
        },
    )
    rows = with_sql(
        rows,
        {
            "lat": terminal_location(seed, "merchant", draw_normal("rk", "dlat"), layout, "lat"),
            "lon": terminal_location(seed, "merchant", draw_normal("rk", "dlon"), layout, "lon"),
        },
    )
    return fraud_rows(rows, p.name, f"NOT ({anchor})")


def night_risky(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    """Large online payments at risky MCCs while the cardholder sleeps, from far away."""
    layout = layout_for(scale, rules)
    p = rules.night_risky
    cases = case_rows(spark, seed, p, scale, first_day, last_day)
    cases = with_sql(cases, {"account": below(layout.n_accounts, draw("case_rk", "account"))})
    cases = with_sql(cases, {"home": home_country("account", layout)})
    local_us = as_us(int_between(rules.night_window_minutes, draw("case_rk", "t0")), MINUTE_US)
    cases = with_sql(
        cases,
        {
            "far": far_country("home", draw("case_rk", "far"), rules),
            "t0": local_day_time("day", local_us, "home"),
            "n": int_between(rules.night_txns, draw("case_rk", "n")),
            "gap_us": as_us(int_between(rules.night_gap_minutes, draw("case_rk", "gap")), MINUTE_US),
        },
    )
    rows = explode_rows(cases, "n", seed, p.name)

    def u(salt: str) -> Sql:
        return draw("rk", salt)

    rows = with_sql(
        rows,
        {
            "txn_id": "concat('tx', lower(lpad(hex(rk), 16, '0')))",
            "ts_us": "t0 + k * gap_us",
            "mcc": mcc_draw(rules.night_mccs, u("mcc")),
            "channel": "'ecom'",
            "amount_eur": uniform_amount(rules.night_eur, u("amount")),
            "lat": location(draw("case_rk", "lat"), "far", "lat"),
            "lon": location(draw("case_rk", "lon"), "far", "lon"),
            "m_country": below(len(COUNTRIES), u("m-country")),
        },
    )
    rows = with_sql(rows, {"merchant": merchant_in("m_country", "mcc", u("merchant"), layout, rules)})
    return fraud_rows(rows, p.name, "true")


def merchant_waves(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    """A skimming merchant: its customers of one day get fraud 1–10 days later."""
    layout = layout_for(scale, rules)
    p = rules.merchant_wave
    home_weights = {i: c.home_weight for i, c in enumerate(COUNTRIES)}
    waves = with_sql(
        case_rows(spark, seed, p, scale, first_day, last_day),
        {
            "wave_country": weighted_choice(home_weights, draw("case_rk", "country")),
            "wave_mcc": mcc_draw(rules.wave_mccs, draw("case_rk", "mcc")),
            "n_cards": int_between(rules.wave_cards, draw("case_rk", "cards")),
        },
    )
    waves = with_sql(
        waves,
        {
            "wave_merchant": merchant_in(
                "wave_country", "wave_mcc", draw("case_rk", "merchant"), layout, rules
            )
        },
    )
    cards = waves.withColumn("card", F.explode(F.expr("sequence(0, n_cards - 1)")))
    cards = with_sql(cards, {"card_rk": row_key(seed, p.name + "/card", "case_rk", "card")})
    skim_local = hours_us(between(*rules.wave_skim_hours, draw("card_rk", "skim-time")))
    cards = with_sql(
        cards,
        {
            "account": account_in("wave_country", draw("card_rk", "account"), layout),
            "skim_us": local_day_time("day", skim_local, "wave_country"),
            "n_fraud": int_between(rules.wave_frauds_per_card, draw("card_rk", "n-fraud")),
            "far": far_country("wave_country", draw("card_rk", "far"), rules),
        },
    )
    rows = cards.withColumn("k", F.explode(F.expr("sequence(0, n_fraud)")))
    rows = with_sql(rows, {"rk": row_key(seed, p.name, "card_rk", "k")})

    def u(salt: str) -> Sql:
        return draw("rk", salt)

    skim = "k = 0"
    online = f"{u('online')} < {sql_lit(rules.wave_online_share)}"
    lo_d, hi_d = rules.wave_delay_days
    delay = f"CAST(floor({between(lo_d, hi_d, u('delay'))} * {sql_lit(float(DAY_US))}) AS BIGINT)"
    rows = with_sql(
        rows,
        {
            "txn_id": "concat('tx', lower(lpad(hex(rk), 16, '0')))",
            "online": f"NOT ({skim}) AND {online}",
            "ts_us": f"CASE WHEN {skim} THEN skim_us ELSE skim_us + {delay} END",
            "noise": draw_normal("rk", "amount"),
        },
    )
    rows = with_sql(
        rows,
        {
            "mcc": f"CASE WHEN {skim} THEN wave_mcc WHEN online THEN "
                   f"{mcc_draw(rules.wave_online_mccs, u('fraud-mcc'))} "
            f"ELSE {mcc_draw(rules.travel_fraud_mccs, u('fraud-mcc'))} END",
            "channel": "CASE WHEN online THEN 'ecom' ELSE 'pos' END",
            "fraud_country": f"CASE WHEN online THEN {below(len(COUNTRIES), u('m-country'))} ELSE far END",
        },
    )
    rows = with_sql(
        rows,
        {
            "merchant": f"CASE WHEN {skim} THEN wave_merchant "
            f"ELSE {merchant_in('fraud_country', 'mcc', u('fraud-merchant'), layout, rules)} END",
            "amount_eur": f"CASE WHEN {skim} THEN {amount_eur('mcc', 'noise', rules)} "
            f"ELSE {uniform_amount(rules.wave_eur, u('amount'))} END",
        },
    )
    rows = with_sql(
        rows,
        {
            axis: f"CASE WHEN online THEN {location(draw('card_rk', axis), 'far', axis)} "
            f"ELSE {terminal_location(seed, 'merchant', draw_normal('rk', 'd' + axis), layout, axis)} END"
            for axis in ("lat", "lon")
        },
    )
    return fraud_rows(rows, p.name, f"NOT ({skim})")


def fraud_transactions(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    """All fraud-case rows (the fraudulent ones and the legitimate visits that belong to a case)."""
    frames = [
        card_testing(spark, seed, scale, first_day, last_day, rules),
        impossible_travel(spark, seed, scale, first_day, last_day, rules),
        night_risky(spark, seed, scale, first_day, last_day, rules),
        merchant_waves(spark, seed, scale, first_day - rules.wave_lookback_days, last_day, rules),
    ]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def transactions_frame(spark: SparkSession, window: Window, rules: BankingRules = RULES) -> DataFrame:
    """Typed ground truth (incl. ``is_fraud``, ``pattern``) of every transaction that can reach the window."""
    first = window.first_day - rules.txn_lookback_days
    legit = legit_transactions(spark, window.seed, window.scale, first, window.last_day, rules)
    # the day range the chargebacks feed uses too: identical plans, so compiled code is reused
    fraud = fraud_transactions(
        spark, window.seed, window.scale, fraud_first_day(window, rules), window.last_day, rules
    )
    return legit.unionByName(fraud.filter(F.expr(f"ts_us >= {first * DAY_US}L")))


def fraud_first_day(window: Window, rules: BankingRules = RULES) -> int:
    """First case day of the fraud frame both banking feeds build (the chargebacks' lookback)."""
    return window.first_day - rules.chargeback_lookback_days


def card_body(account: Sql, rules: BankingRules = RULES) -> Sql:
    """The first 15 digits of the account's PAN: a BIN and 9 digits that are a bijection of the account."""
    bin_ = lookup(rules.bins, f"pmod({account}, {len(rules.bins)})")
    digits = f"pmod({account} * {rules.pan_multiplier}L + {rules.pan_offset}L, 1000000000L)"
    return f"concat({bin_}, lpad(CAST({digits} AS STRING), 9, '0'))"


def luhn_check_digit(body: Sql) -> Sql:
    """The Luhn check digit that makes the 15 digits of ``body`` a valid 16-digit PAN."""
    terms = []
    for i in range(1, 16):  # 15 digit positions: a fixed-size expression, not a loop over rows
        digit = f"CAST(substring({body}, {i}, 1) AS INT)"
        # doubled: every second digit counting leftwards from the one next to the check digit
        terms.append(
            f"CASE WHEN {digit} * 2 > 9 THEN {digit} * 2 - 9 ELSE {digit} * 2 END" if i % 2 else digit
        )
    return f"CAST(pmod(10 - pmod({' + '.join(terms)}, 10), 10) AS STRING)"


def with_txn_attributes(
    df: DataFrame, seed: int, layout: BankLayout, rules: BankingRules = RULES
) -> DataFrame:
    """Landing columns derived from the typed frame: ids, PAN, MCC, country, currency, local amount, clock."""
    df = with_sql(df, {"merchant_rk": row_key(seed, "merchant", "merchant")})
    sign = f"CASE WHEN {draw('merchant_rk', 'skew-sign')} < 0.5D THEN -1 ELSE 1 END"
    skew = as_us(
        f"{int_between((1, rules.max_skew_minutes), draw('merchant_rk', 'skew'))} * {sign}", MINUTE_US
    )
    skewed = f"{draw('merchant_rk', 'skewed')} < {sql_lit(rules.skewed_merchant_rate)} AND channel != 'ecom'"
    df = with_sql(
        df,
        {
            "m_country": merchant_country("merchant", layout),
            "mcc_code": lookup([m.code for m in MCCS], merchant_mcc("merchant", layout)),
            "terminal_ts_us": f"ts_us + CASE WHEN {skewed} THEN {skew} ELSE 0L END",
            "card_body": card_body("account", rules),
        },
    )
    amount = f"amount_eur * {country_attr('per_eur', 'm_country')}"
    return with_sql(
        df,
        {
            "account_id": "format_string('A%08d', account)",
            "merchant_id": "format_string('M%08d', merchant)",
            "country": country_attr("code", "m_country"),
            "currency": country_attr("currency", "m_country"),
            "amount_text": f"CASE WHEN {country_attr('decimals', 'm_country')} = 0 THEN "
                           f"{fixed(f'round({amount}, 0)', 0)} "
            f"ELSE {fixed(f'round({amount}, 2)', 2)} END",
            "card_number": f"concat(card_body, {luhn_check_digit('card_body')})",
            "card_present": "channel != 'ecom'",
        },
    ).drop("merchant_rk")


def transaction_lines(df: DataFrame, seed: int, rules: BankingRules = RULES) -> DataFrame:
    """CSV text of each transaction with the documented dirt; adds ``dirt`` and ``line``."""
    df = with_sql(df, {"dirt_rk": row_key(seed, "txn-dirt", "txn_id")})

    def u(salt: str) -> Sql:
        return draw("dirt_rk", salt)

    df = with_sql(with_draws(df, "dirt_rk", "kind"), {"dirt": dirt_kind(rules.txn_dirt, draw_column("kind"))})
    df = with_sql(
        df,
        {
            "missing_field": "CASE WHEN dirt = 'missing' THEN "
                             f"{choice_sql(rules.txn_missing_fields, u('missing'))} ELSE '' END",
            "wrong_kind": "CASE WHEN dirt = 'wrong_type' THEN "
                          f"{choice_sql(rules.txn_wrong_kinds, u('wrong'))} ELSE '' END",
        },
    )
    ts = (
        "CASE WHEN missing_field = 'ts' THEN NULL "
        f"WHEN wrong_kind = 'ts_dmy' THEN {local_clock('terminal_ts_us', 'dd/MM/yyyy HH:mm:ss')} "
        f"ELSE {iso_timestamp('terminal_ts_us', 0, zulu=True)} END"
    )
    amount = (
        "CASE WHEN missing_field = 'amount' THEN NULL "
        "WHEN wrong_kind = 'amount_comma' THEN replace(amount_text, '.', ',') "
        "WHEN wrong_kind = 'amount_na' THEN 'N/A' ELSE amount_text END"
    )
    card = (
        f"CASE WHEN {u('spaces')} < {sql_lit(rules.card_spaces_rate)} "
        "THEN concat_ws(' ', substring(card_number, 1, 4), substring(card_number, 5, 4), "
        "substring(card_number, 9, 4), substring(card_number, 13, 4)) ELSE card_number END"
    )
    located = "missing_field != 'location'"
    df = with_csv_line(
        df,
        "csv",
        [
            "txn_id",
            ts,
            card,
            "account_id",
            "CASE WHEN missing_field != 'merchant_id' THEN merchant_id END",
            "mcc_code",
            amount,
            "currency",
            "channel",
            "country",
            f"CASE WHEN {located} THEN {fixed('lat', 4)} END",
            f"CASE WHEN {located} THEN {fixed('lon', 4)} END",
            "CASE WHEN card_present THEN 'true' ELSE 'false' END",
        ],
    )
    return with_sql(
        df,
        {
            "line": f"CASE WHEN dirt = 'malformed' THEN {malformed('csv', 'dirt_rk', 'malformed')} ELSE csv "
                    "END"
        },
    )


def choice_sql(values: Sequence[str], u: Sql) -> Sql:
    return lookup(values, below(len(values), u))


def txn_delivery(rules: BankingRules = RULES) -> Sql:
    """When the processor exports the transaction: minutes later; 0.2 % a day or two late (uses
    ``dirt_rk``)."""

    def u(salt: str) -> Sql:
        return draw("dirt_rk", salt)

    latency = f"CAST(floor({between(*rules.txn_latency_seconds, u('latency'))} * {SECOND_US}) AS BIGINT)"
    late_us = (f"{as_us(int_between(rules.late_days, u('late-days')), DAY_US)} + CAST(floor({u('late-time')} "
        f"* {sql_lit(float(DAY_US))}) AS BIGINT)")
    return (
        f"ts_us + {latency} + CASE WHEN {u('late')} < {sql_lit(rules.late_rate)} THEN {late_us} ELSE 0L END"
    )


def transactions_feed(spark: SparkSession, window: Window, rules: BankingRules = RULES) -> FeedLines:
    """The transactions feed's lines for ``window`` (see the module docstring)."""
    layout = layout_for(window.scale, rules)
    typed = with_txn_attributes(transactions_frame(spark, window, rules), window.seed, layout, rules)
    lines = select_sql(
        transaction_lines(typed, window.seed, rules),
        {"delivered_us": txn_delivery(rules), "key": "txn_id", "line": "line"},
    )
    lines = with_duplicates(
        lines,
        window.seed,
        "transactions/duplicate",
        rules.txn_dirt.duplicate,
        rules.duplicate_delay_hours * HOUR_US,
    )
    return FeedLines(
        feed="transactions",
        ext="csv",
        lines=lines,
        header=",".join(TXN_COLUMNS),
        windows_per_day=rules.windows_per_day,
        shards=shards_for(window.scale, rules.scale_per_shard),
    )


# ----------------------------------------------------------------------------------------------
# chargebacks


def false_chargeback_slots(
    spark: SparkSession, seed: int, scale: int, first_day: int, last_day: int, rules: BankingRules = RULES
) -> DataFrame:
    """Legitimate transaction slots ``(day, idx)`` that get a false chargeback (``false_chargeback_rate``).

    The day's slots are cut into equal strata and pick ``j`` lies in stratum ``j``, so picks never repeat.
    """
    per_day = rules.txns_per_scale_day * scale
    expected = per_day * rules.false_chargeback_rate
    strata = math.floor(expected) + 1
    picks = day_index_rows(spark, first_day, last_day, strata, 1_000_000)
    count = stochastic_count(expected, uniform(seed, "false-cb/count", "day"))
    stratum = sql_lit(per_day / strata)
    slot = f"CAST(floor((idx + {uniform(seed, 'false-cb/slot', 'day', 'idx')}) * {stratum}) AS BIGINT)"
    picks = select_sql(
        picks.filter(F.expr(f"idx < {count}")), {"day": "day", "idx": f"least({slot}, {per_day - 1}L)"}
    )
    return picks.filter(F.expr(kept_legit(seed, rules)))


def chargebacks_frame(spark: SparkSession, window: Window, rules: BankingRules = RULES) -> DataFrame:
    """Typed chargeback rows: ``txn_id``, ``txn_ts_us``, ``reported_us``, ``reason_code``, ``is_fraud``,
    ``kind``."""
    seed = window.seed
    layout = layout_for(window.scale, rules)
    first = fraud_first_day(window, rules)
    fraud = fraud_transactions(spark, seed, window.scale, first, window.last_day, rules).filter("is_fraud")
    legit = legit_details(
        false_chargeback_slots(spark, seed, window.scale, first, window.last_day, rules), seed, layout, rules
    )
    fraud = with_sql(fraud, {"cb_rk": row_key(seed, "chargeback", "txn_id")})
    legit = with_sql(legit, {"cb_rk": row_key(seed, "chargeback", "txn_id")})

    def u(salt: str) -> Sql:
        return draw("cb_rk", salt)

    rate = (
        f"CASE WHEN amount_eur < {sql_lit(rules.small_fraud_eur)} THEN "
        f"{sql_lit(rules.chargeback_rate_small_fraud)} "
        f"ELSE {sql_lit(rules.chargeback_rate_fraud)} END"
    )
    disputed_fraud = with_sql(
        fraud.filter(F.expr(f"{u('has')} < {rate}")),
        {
            "reason_code": "CASE WHEN channel = 'ecom' THEN '10.4' ELSE '10.3' END",
            "reversed": f"{u('reversed')} < {sql_lit(rules.reversal_rate_fraud)}",
        },
    )
    disputed_legit = with_sql(
        legit,
        {
            "reason_code": weighted_choice(dict(rules.false_reasons), u("false-reason")),
            "reversed": f"{u('reversed')} < {sql_lit(rules.reversal_rate_false)}",
        },
    )
    lo, hi = rules.chargeback_delay_days
    delay = (f"CAST(floor(({sql_lit(lo)} + {sql_lit(hi - lo)} * pow({u('delay')}, 2.0D)) * "
        f"{sql_lit(float(DAY_US))}) AS BIGINT)")
    reversal_delay = (f"CAST(floor({between(*rules.reversal_delay_days, u('reversal-delay'))} * "
        f"{sql_lit(float(DAY_US))}) AS BIGINT)")
    cbs = select_sql(
        disputed_fraud.unionByName(disputed_legit),
        {
            "txn_id": "txn_id",
            "txn_ts_us": "ts_us",
            "reported_us": f"ts_us + {delay}",
            "reversal_us": f"ts_us + {delay} + {reversal_delay}",
            "reason_code": "reason_code",
            "is_fraud": "is_fraud",
            "reversed": "reversed",
            "kind": "'chargeback'",
        },
    )
    # A reversed chargeback is two rows: the chargeback and, later, its reversal (one pass, no union).
    rows = cbs.withColumn("_row", F.explode(F.expr("CASE WHEN reversed THEN array(0, 1) ELSE array(0) END")))
    return with_sql(
        rows,
        {
            "reported_us": "CASE WHEN _row = 0 THEN reported_us ELSE reversal_us END",
            "reason_code": "CASE WHEN _row = 0 THEN reason_code ELSE 'REVERSED' END",
            "kind": "CASE WHEN _row = 0 THEN 'chargeback' ELSE 'reversal' END",
        },
    ).drop("reversal_us", "_row")


def chargeback_lines(df: DataFrame, seed: int, rules: BankingRules = RULES) -> DataFrame:
    """CSV text of each chargeback row with the documented dirt; adds ``dirt`` and ``line``."""
    df = with_sql(df, {"dirt_rk": row_key(seed, "cb-dirt", "txn_id", "kind")})
    df = with_sql(df, {"dirt": dirt_kind(rules.cb_dirt, draw("dirt_rk", "kind"))})
    reported = (
        f"CASE WHEN dirt = 'wrong_type' THEN {local_clock('reported_us', 'dd/MM/yyyy HH:mm')} "
        f"ELSE {iso_timestamp('reported_us', 0, zulu=True, fraction=0)} END"
    )
    df = with_csv_line(df, "csv", ["txn_id", reported, "CASE WHEN dirt != 'missing' THEN reason_code END"])
    return with_sql(
        df,
        {
            "line": f"CASE WHEN dirt = 'malformed' THEN {malformed('csv', 'dirt_rk', 'malformed')} ELSE csv "
                    "END"
        },
    )


def chargebacks_feed(spark: SparkSession, window: Window, rules: BankingRules = RULES) -> FeedLines:
    """The chargebacks feed's lines for ``window`` (see the module docstring)."""
    df = chargeback_lines(chargebacks_frame(spark, window, rules), window.seed, rules)
    latency = hours_us(between(*rules.chargeback_latency_hours, draw("dirt_rk", "latency")))
    lines = select_sql(
        df, {"delivered_us": f"reported_us + {latency}", "key": "concat(txn_id, '/', kind)", "line": "line"}
    )
    lines = with_duplicates(lines, window.seed, "chargebacks/duplicate", rules.cb_dirt.duplicate, DAY_US)
    return FeedLines(feed="chargebacks", ext="csv", lines=lines, header=",".join(CHARGEBACK_COLUMNS))
