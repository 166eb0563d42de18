"""Clickstream landing feed (commerce): shop events as JSON lines, one object per line.

Files: ``<landing>/clickstream/clickstream-<YYYY-MM-DD>-<nnnnn>.jsonl``, 4 delivery windows of 6 h
per day (``00000``–``00003``), times ``ceil(scale / 25)`` shards. Lines are in delivery order.

Fields (a key whose value would be null is left out of the object):

- event_id (string): UUID-formatted id of the event; the same event delivered twice has the same id
- ts (string): when the event happened, device clock, ISO-8601 with the user's UTC offset, ms precision
  (``2026-11-20T14:03:07.123+01:00``)
- user_id (string): ``u-0000042``
- session_id (string): UUID-formatted id of the browsing session
- event_type (string): ``view``, ``add_to_cart``, ``remove_from_cart``, ``purchase`` or ``rating``
- item_id (string): ``i-000123``
- category (string): item category (12: electronics, books, fashion, home, sports, toys, beauty, grocery,
  garden, automotive, music, pets)
- price (number): item unit price in EUR, 2 decimals
- quantity (integer): units, only on add_to_cart, remove_from_cart and purchase (1–3)
- rating (integer): 1–5 stars, only on ``rating`` events
- device (string): ``mobile``, ``desktop`` or ``tablet`` (fixed per user)
- ip (string): IPv4 address (fixed per user)
- user_agent (string): browser/app user agent (fixed per user)
- referrer (string): URL the session came from; empty string for direct traffic
- app_version (string): **schema v2 only**: client version, present on events whose UTC event day is on or
  after the schema-change day (``start + days // 2``)

Volume: 1,200 × scale sessions per day before weekday thinning (Mon–Thu keep 80 %, Fri 85 %,
Sat–Sun 100 %), 1 + ⌊Exp(mean 5)⌋ events per session (at most 40): about 5,800 × scale events per day.

Learnable signal (exact generating rules):

- Users: ``1500 × scale``; a session's user is ``⌊n_users · u²⌋`` (low user numbers are much more
  active). Each user has two favourite categories, ``f1 = ⌊12·u⌋`` and ``f2 = (f1 + 1 + ⌊11·u'⌋) mod 12``.
- Items: ``40 × scale`` per category; item number ``category + 12 · rank``. An event's category is
  one of the user's favourites (each with probability 0.375, together 0.75), else drawn from the global
  category popularity ``∝ 1/(c+1)^0.8`` (category order as listed above). Within the category the rank
  is Zipf-like, ``P(rank) ∝ 1/(rank+1)^1.1``. So a per-user model (category affinity) beats global
  popularity, and popularity beats random.
- Event type: view 70 %, add_to_cart 12 %, remove_from_cart 3 %, purchase 10 %, rating 5 %.
- Rating: ``clip(round(N(mean, 0.8)), 1, 5)`` with mean 4.4 for a favourite category, 2.4 otherwise.
- Price: fixed per item, ``median(category) · exp(0.5 · N(0,1))``.
- Times: a session starts uniformly over the user's local day (10 %) or between 07:00 and 24:00
  local, peaking around 15:30 (90 %); events are 10–120 s apart (fixed gap per session + jitter).

Dirt (rates per event; the first three are exclusive):

- malformed line (rate 0.2 %): half truncated JSON (first 20–80 % of the line), half garbage (HTML error page,
  binary junk, …)
- missing field (rate 0.5 %): one of ts, user_id, item_id, event_type, price left out
- wrong type (rate 0.4 %): ``price`` as a string with a decimal comma (``"12,99"``), ``ts`` as epoch
  milliseconds (number), or ``user_id`` as a number (``42``)
- duplicate delivery (rate 0.5 %): the same line again in the next 6-hour file (6 h later)
- late session (rate 1 % of sessions): the whole session is delivered 1–3 days (+ up to 1 day) late: event ts
  days before the file date
- clock skew (rate 2 % of users): the device clock is off by ±1–180 min on all their events
- out of order (rate all): lines are in delivery order; delivery latency is 1–300 s per event
- various offsets (rate all): ts carries the user's UTC offset (+01:00, +00:00, -05:00, -08:00, +05:30,
  +09:00, +02:00, -03:00; never ``Z``)
- schema change (rate from the schema-change day): new field ``app_version``
"""

from __future__ import annotations

from dataclasses import dataclass

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
    as_us,
    below,
    between,
    choice,
    day_index_rows,
    day_of,
    dirt_kind,
    draw,
    draw_column,
    draw_normal,
    epoch_millis,
    iso_timestamp,
    lookup,
    malformed,
    round_to,
    row_key,
    select_sql,
    shards_for,
    sql_lit,
    uuid_like,
    weekday,
    weighted_choice,
    with_draws,
    with_duplicates,
    with_sql,
    zipf_index,
)

FEED = "clickstream"
CLICKSTREAM_DIRT = DirtRates(malformed=0.002, missing=0.005, wrong_type=0.004, duplicate=0.005)


@dataclass(frozen=True)
class ClickstreamRules:
    """Every rate and rule of the clickstream generator (see the module docstring)."""

    users_per_scale: int = 1_500
    items_per_category_per_scale: int = 40
    sessions_per_scale_day: int = 1_200
    # Share of sessions kept per weekday, Monday..Sunday (weekends are busiest).
    weekday_keep: tuple[float, ...] = (0.8, 0.8, 0.8, 0.8, 0.85, 1.0, 1.0)
    # user = floor(n_users * u ** activity_exponent): low user numbers are far more active
    activity_exponent: float = 2.0
    mean_extra_events: float = 5.0
    max_events: int = 40
    event_gap_seconds: tuple[int, int] = (10, 120)
    anytime_session_share: float = 0.1
    day_start_hour: int = 7
    favourite_share: float = 0.75
    item_zipf_exponent: float = 1.1
    category_zipf_exponent: float = 0.8
    event_mix: tuple[tuple[str, float], ...] = (
        ("view", 0.70),
        ("add_to_cart", 0.12),
        ("remove_from_cart", 0.03),
        ("purchase", 0.10),
        ("rating", 0.05),
    )
    max_quantity: int = 3
    rating_mean_favourite: float = 4.4
    rating_mean_other: float = 2.4
    rating_sd: float = 0.8
    price_sigma: float = 0.5
    categories: tuple[tuple[str, float], ...] = (
        ("electronics", 180.0),
        ("books", 15.0),
        ("fashion", 45.0),
        ("home", 60.0),
        ("sports", 50.0),
        ("toys", 25.0),
        ("beauty", 20.0),
        ("grocery", 8.0),
        ("garden", 35.0),
        ("automotive", 70.0),
        ("music", 12.0),
        ("pets", 22.0),
    )
    devices: tuple[tuple[str, float], ...] = (("mobile", 0.55), ("desktop", 0.35), ("tablet", 0.10))
    # Three user agents per device, in the order of ``devices``.
    user_agents: tuple[str, ...] = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 ShopApp/7",
        "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
        "ShopApp/7 (Android 14; SM-S921B)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
        "ShopApp/7 (iPadOS 17.7)",
    )
    referrers: tuple[tuple[str, float], ...] = (
        ("", 0.35),
        ("https://www.google.com/", 0.30),
        ("https://www.bing.com/", 0.05),
        ("https://www.facebook.com/", 0.08),
        ("https://t.co/", 0.04),
        ("https://newsletter.example-shop.com/", 0.10),
        ("https://partner.example.net/deals", 0.08),
    )
    # UTC offset of the user's device in minutes, with its share of users.
    utc_offsets: tuple[tuple[int, float], ...] = (
        (60, 0.30),
        (0, 0.15),
        (-300, 0.20),
        (-480, 0.10),
        (330, 0.08),
        (540, 0.07),
        (120, 0.05),
        (-180, 0.05),
    )
    latency_seconds: tuple[int, int] = (1, 300)
    late_session_rate: float = 0.01
    late_days: tuple[int, int] = (1, 3)
    duplicate_delay_hours: int = 6
    dirt: DirtRates = CLICKSTREAM_DIRT
    missing_fields: tuple[str, ...] = ("ts", "user_id", "item_id", "event_type", "price")
    wrong_type_kinds: tuple[str, ...] = ("price_text", "ts_epoch", "user_id_number")
    skewed_user_rate: float = 0.02
    max_skew_minutes: int = 180
    windows_per_day: int = 4
    scale_per_shard: int = 25
    rows_per_partition: int = 50_000

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def lookback_days(self) -> int:
        """Event days before the window that can still be delivered in it (late sessions)."""
        return self.late_days[1] + 2


RULES = ClickstreamRules()


def n_users(scale: int, rules: ClickstreamRules = RULES) -> int:
    return rules.users_per_scale * scale


def n_items_per_category(scale: int, rules: ClickstreamRules = RULES) -> int:
    return rules.items_per_category_per_scale * scale


def user_id(user: Sql) -> Sql:
    return f"format_string('u-%07d', {user})"


def item_id(item: Sql) -> Sql:
    return f"format_string('i-%06d', {item})"


# ----------------------------------------------------------------------------------------------
# users: fixed attributes drawn from the user's row key


def with_user_profile(df: DataFrame, seed: int, rules: ClickstreamRules = RULES) -> DataFrame:
    """Add the fixed attributes of the user in column ``user``: favourites, device, ip, offset, skew."""
    df = with_draws(with_sql(df, {"user_rk": row_key(seed, "user", "user")}), "user_rk", "device", "tz")

    def u(salt: str) -> Sql:
        return draw("user_rk", salt)

    c = rules.n_categories
    fav1 = below(c, u("fav1"))
    devices = [name for name, _ in rules.devices]
    agents_per_device = len(rules.user_agents) // len(devices)
    device_no = weighted_choice({i: w for i, (_, w) in enumerate(rules.devices)}, draw_column("device"))
    octets = ", ".join(f"{below(254, u(f'ip{i}'))} + 1" for i in range(4))
    sign = f"CASE WHEN {u('skew-sign')} < 0.5D THEN -1 ELSE 1 END"
    skew_minutes = f"({below(rules.max_skew_minutes, u('skew'))} + 1) * {sign}"
    df = with_sql(
        df,
        {
            "fav1": fav1,
            "fav_step": f"1 + {below(c - 1, u('fav2'))}",
            "device_no": device_no,
            "agent_no": below(agents_per_device, u("agent")),
            "ip": f"format_string('%d.%d.%d.%d', {octets})",
            "utc_offset_min": weighted_choice(dict(rules.utc_offsets), draw_column("tz")),
            "skew_us": f"CASE WHEN {u('skewed')} < {sql_lit(rules.skewed_user_rate)} "
            f"THEN {as_us(skew_minutes, MINUTE_US)} ELSE 0L END",
            "app_version": f"format_string('7.%d.%d', {below(12, u('app-minor'))}, "
                           f"{below(5, u('app-patch'))})",
        },
    )
    return with_sql(
        df,
        {
            "fav2": f"pmod(fav1 + fav_step, {c})",
            "device": lookup(devices, "device_no"),
            "user_agent": lookup(rules.user_agents, f"device_no * {agents_per_device} + agent_no"),
        },
    ).drop("fav_step", "device_no", "agent_no", "user_rk", draw_column("device"), draw_column("tz"))


# ----------------------------------------------------------------------------------------------
# sessions and events


def sessions(spark: SparkSession, window: Window, rules: ClickstreamRules = RULES) -> DataFrame:
    """One row per session started on an event day that can reach the window's files."""
    seed = window.seed
    per_day = rules.sessions_per_scale_day * window.scale
    first = window.first_day - rules.lookback_days
    rows = day_index_rows(spark, first, window.last_day, per_day, rules.rows_per_partition)
    rows = with_sql(
        rows.withColumnRenamed("idx", "session"), {"session_rk": row_key(seed, "session", "day", "session")}
    )

    def u(salt: str) -> Sql:
        return draw("session_rk", salt)

    kept = f"{u('keep')} < {lookup(rules.weekday_keep, weekday('day'))}"
    late = f"{u('late')} < {sql_lit(rules.late_session_rate)}"
    # Sessions before the window only matter when late, or on the day before (duplicates, latency).
    rows = rows.filter(F.expr(f"{kept} AND (day >= {window.first_day - 1} OR {late})"))
    activity = f"pow({u('user')}, {sql_lit(rules.activity_exponent)})"
    rows = with_user_profile(
        with_sql(rows, {"late": late, "user": below(n_users(window.scale, rules), activity)}), seed, rules
    )
    daytime_seconds = (24 - rules.day_start_hour) * 3600.0
    local_seconds = (
        f"CASE WHEN {u('anytime')} < {sql_lit(rules.anytime_session_share)} THEN {u('any')} * 86400.0D "
        f"ELSE {sql_lit(rules.day_start_hour * 3600.0)} + ({u('t1')} + {u('t2')}) / 2.0D * "
        f"{sql_lit(daytime_seconds)} END"
    )
    extra = f"floor(-ln(1.0D - {u('length')}) * {sql_lit(rules.mean_extra_events)})"
    lo_gap, hi_gap = rules.event_gap_seconds
    lo_late, hi_late = rules.late_days
    late_days = f"{lo_late} + {below(hi_late - lo_late + 1, u('late-days'))}"
    late_delay = (
        f"CASE WHEN late THEN {as_us(late_days, DAY_US)} "
        f"+ CAST(floor({u('late-time')} * {sql_lit(float(DAY_US))}) AS BIGINT) ELSE 0L END"
    )
    rows = with_draws(rows, "session_rk", "referrer")
    return with_sql(
        rows,
        {
            "session_id": uuid_like(seed, "session/id", "day", "session"),
            "start_us": f"day * {DAY_US}L + CAST(floor({local_seconds} * 1000.0D) AS BIGINT) * 1000L "
            f"- {as_us('utc_offset_min', MINUTE_US)}",
            "n_events": f"CAST(least({extra}, {rules.max_events - 1}) + 1 AS INT)",
            "gap_us": f"CAST(floor({between(lo_gap, hi_gap, u('gap'))} * {SECOND_US}) AS BIGINT)",
            "referrer": weighted_choice(dict(rules.referrers), draw_column("referrer")),
            "late_delay_us": late_delay,
        },
    )


def events(sessions_df: DataFrame, window: Window, rules: ClickstreamRules = RULES) -> DataFrame:
    """Explode sessions into typed events (true time ``ts_us``, device time ``device_ts_us``, delivery)."""
    seed = window.seed
    df = sessions_df.withColumn("k", F.explode(F.sequence(F.lit(0), F.col("n_events") - 1)))
    df = with_draws(
        with_sql(df, {"event_rk": row_key(seed, "event", "day", "session", "k")}), "event_rk", "type"
    )

    def u(salt: str) -> Sql:
        return draw("event_rk", salt)

    favourite = f"CASE WHEN {u('which-fav')} < 0.5D THEN fav1 ELSE fav2 END"
    popular = zipf_index(u("category"), rules.n_categories, rules.category_zipf_exponent)
    category = (
        f"CASE WHEN {u('favourite')} < {sql_lit(rules.favourite_share)} THEN {favourite} ELSE {popular} END"
    )
    rank = zipf_index(u("item"), n_items_per_category(window.scale, rules), rules.item_zipf_exponent)
    lo_lat, hi_lat = rules.latency_seconds
    quantity = f"CAST(floor(pow({u('quantity')}, 3.0D) * {rules.max_quantity}) + 1 AS INT)"
    df = with_sql(
        df,
        {
            "event_id": uuid_like(seed, "event/id", "day", "session", "k"),
            "ts_us": f"start_us + k * gap_us + CAST(floor({u('jitter')} * gap_us / 2.0D) AS BIGINT)",
            "latency_us": f"CAST(floor({between(lo_lat, hi_lat, u('latency'))} * {SECOND_US}) AS BIGINT)",
            "category_no": category,
            "rank": rank,
            "event_type": weighted_choice(dict(rules.event_mix), draw_column("type")),
            "quantity_draw": quantity,
            "rating_noise": draw_normal("event_rk", "rating"),
        },
    )
    is_favourite = "(category_no = fav1 OR category_no = fav2)"
    rating_mean = (
        f"CASE WHEN {is_favourite} THEN {sql_lit(rules.rating_mean_favourite)} "
        f"ELSE {sql_lit(rules.rating_mean_other)} END"
    )
    rating = (f"CAST(least(greatest(round({rating_mean} + {sql_lit(rules.rating_sd)} * rating_noise), 1.0D), "
        "5.0D) AS INT)")
    medians = [m for _, m in rules.categories]
    df = with_sql(
        df,
        {
            "device_ts_us": "ts_us + skew_us",
            "delivered_us": "ts_us + latency_us + late_delay_us",
            "item": f"category_no + {rules.n_categories} * rank",
            "category": lookup([name for name, _ in rules.categories], "category_no"),
            "quantity": "CASE WHEN event_type IN ('add_to_cart', 'remove_from_cart', 'purchase') THEN "
                        "quantity_draw END",
            "rating": f"CASE WHEN event_type = 'rating' THEN {rating} END",
            "favourite": is_favourite,
            "schema_v2": f"{day_of('ts_us')} >= {window.schema_change_day}",
        },
    )
    price = round_to(
        f"{lookup(medians, 'category_no')} * exp({sql_lit(rules.price_sigma)} * "
        f"{draw_normal('item_rk', 'price')})",
        2,
    )
    df = with_sql(df, {"item_rk": row_key(seed, "item", "item")})
    return with_sql(df, {"price": price}).drop("quantity_draw", "rating_noise", "item_rk", "latency_us")


def clickstream_events(spark: SparkSession, window: Window, rules: ClickstreamRules = RULES) -> DataFrame:
    """Typed ground truth: every generated event (incl. lookback days) before formatting and dirt."""
    return events(sessions(spark, window, rules), window, rules)


# ----------------------------------------------------------------------------------------------
# landing lines

_TS_PLACEHOLDER = "@@ts@@"
_USER_PLACEHOLDER = "@@user@@"


def json_lines(df: DataFrame, seed: int, rules: ClickstreamRules = RULES) -> DataFrame:
    """Format events as JSON text with the documented dirt; adds ``dirt`` and ``line``."""

    def u(salt: str) -> Sql:
        return draw("event_rk", salt)

    df = with_sql(with_draws(df, "event_rk", "dirt"), {"dirt": dirt_kind(rules.dirt, draw_column("dirt"))})
    df = with_sql(
        df,
        {
            "missing_field": "CASE WHEN dirt = 'missing' THEN "
                             f"{choice(rules.missing_fields, u('dirt-missing'))} ELSE '' END",
            "wrong_kind": "CASE WHEN dirt = 'wrong_type' THEN "
                          f"{choice(rules.wrong_type_kinds, u('dirt-wrong'))} ELSE '' END",
        },
    )

    def unless_missing(name: str, value: Sql) -> Sql:
        return f"CASE WHEN missing_field != '{name}' THEN {value} END"

    ts = (f"CASE WHEN wrong_kind = 'ts_epoch' THEN '{_TS_PLACEHOLDER}' ELSE "
        f"{iso_timestamp('device_ts_us', 'utc_offset_min')} END")
    uid = f"CASE WHEN wrong_kind = 'user_id_number' THEN '{_USER_PLACEHOLDER}' ELSE {user_id('user')} END"
    fields = {
        "event_id": "event_id",
        "ts": unless_missing("ts", ts),
        "user_id": unless_missing("user_id", uid),
        "session_id": "session_id",
        "event_type": unless_missing("event_type", "event_type"),
        "item_id": unless_missing("item_id", item_id("item")),
        "category": "category",
        "price": unless_missing("price", "price"),
        "quantity": "quantity",
        "rating": "rating",
        "device": "device",
        "ip": "ip",
        "user_agent": "user_agent",
        "referrer": "referrer",
        "app_version": "CASE WHEN schema_v2 THEN app_version END",
    }
    record = ", ".join(f"'{name}', {value}" for name, value in fields.items())
    df = with_sql(df, {"json": f"to_json(named_struct({record}))"})
    typed = (
        f"CASE WHEN wrong_kind = 'ts_epoch' "
        f"THEN replace(json, '\"{_TS_PLACEHOLDER}\"', CAST({epoch_millis('device_ts_us')} AS STRING)) "
        f"WHEN wrong_kind = 'user_id_number' THEN replace(json, '\"{_USER_PLACEHOLDER}\"', CAST(user AS "
        "STRING)) "
        f"WHEN wrong_kind = 'price_text' "
        f'THEN regexp_replace(json, \'"price":(-?[0-9]+)[.]([0-9]+)\', \'"price":"$1,$2"\') '
        "ELSE json END"
    )
    df = with_sql(df, {"json": typed})
    return with_sql(
        df,
        {
            "line": f"CASE WHEN dirt = 'malformed' THEN {malformed('json', 'event_rk', 'dirt-malformed')} "
                    "ELSE json END"
        },
    )


def clickstream_feed(spark: SparkSession, window: Window, rules: ClickstreamRules = RULES) -> FeedLines:
    """The clickstream feed's lines for ``window`` (see the module docstring)."""
    lines = select_sql(
        json_lines(clickstream_events(spark, window, rules), window.seed, rules),
        {"delivered_us": "delivered_us", "key": "event_id", "line": "line"},
    )
    lines = with_duplicates(
        lines,
        window.seed,
        "clickstream/duplicate",
        rules.dirt.duplicate,
        rules.duplicate_delay_hours * HOUR_US,
    )
    return FeedLines(
        feed=FEED,
        ext="jsonl",
        lines=lines,
        windows_per_day=rules.windows_per_day,
        shards=shards_for(window.scale, rules.scale_per_shard),
    )
