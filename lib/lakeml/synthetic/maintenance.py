"""Machine telemetry (JSON lines) and maintenance log (CSV) landing feeds (maintenance domain).

Files: ``<landing>/telemetry/telemetry-<YYYY-MM-DD>-<nnnnn>.jsonl`` (4 delivery windows of 6 h per
day, times ``ceil(scale / 25)`` shards) and ``<landing>/maintenance/maintenance-<YYYY-MM-DD>-00000.csv``
(one file per day, with a header line).

**telemetry** (one reading per machine per 10-minute operating cycle; a key whose value would be
null is left out)

- machine_id (string): ``MCH-00001``
- ts (string): reading time, machine clock, ISO-8601 with the site's UTC offset, ms
  (``2026-11-20T14:00:03.250+09:00``)
- cycle (integer): operating cycles since the last reset (overhaul or repair), from 1
- setting_1 (number): load fraction of the operating regime (0.25–1.00)
- setting_2 (number): speed set-point ratio of the regime (0.50–1.00)
- setting_3 (number): coolant mode of the regime (60 or 100)
- temperature (number): housing temperature, °C
- pressure (number): discharge pressure, bar
- vibration (number): vibration velocity RMS, mm/s — **renamed ``vibration_mm_s``** from the schema-change day
  on
- rpm (number): shaft speed, 1/min
- current (number): motor current, A
- voltage (number): supply voltage, V (noise only)
- flow (number): flow rate, l/min
- oil_temp (number): lubricating oil temperature, °C
- humidity (number): ambient relative humidity, % (noise only)
- torque (number): shaft torque, Nm
- acoustic (number): acoustic emission level, dB
- power_kw (number): electrical power, kW
- firmware (string): controller firmware; ``3.<slot mod 10>.<machine mod 4>`` before the schema change,
  ``4.0.<machine mod 3>`` from it on

**maintenance**

- machine_id (string): ``MCH-00001``
- ts (string): when the work happened, ISO-8601 with the site's UTC offset, seconds
  (``2026-11-20T14:00:00+09:00``)
- kind (string): ``failure`` (the machine broke down), ``repair`` (back in service after a failure; health
  reset) or ``preventive`` (scheduled overhaul; health reset)
- component (string): ``bearing``, ``pump``, ``motor``, ``seal`` (failure, repair) or ``all`` (overhaul)

Volume: ``30 × scale`` machines; about 3,800 × scale readings and 10 × scale maintenance rows per
day. A reading is taken 0–20 s into its cycle and delivered 5–60 s later; maintenance rows are
logged 0.5–8 h after the work.

Learnable signal (C-MAPSS-like run-to-failure; exact generating rules):

- Time per machine is cut into 21-day *slots* at a machine-specific phase. Every slot starts with a
  ``preventive`` overhaul (4 h, component ``all``) that resets health. Then lives follow each
  other: life *j* has a nominal length ``L`` of 2.5–9 days of cycles (uniform) and a failing
  component (bearing 35 %, pump 25 %, motor 25 %, seal 15 %). If the life ends before the slot
  does, the machine fails (``failure`` row at the end of its last cycle), is repaired for 4–36 h
  (``repair`` row when back in service, if before the slot end) and a new life starts at cycle 1.
  A life still running at the slot end is cut short by the next overhaul (censored).
- Degradation ``h = (cycle / L) ** 2`` (0 = new, 1 = failure).
- Operating regime: one of 6 regimes (``REGIMES``) drawn uniformly per machine and hour.
- Sensor = ``idle + span · load + drift · m(component) · h + bias(machine) + noise · N(0,1)``,
  with ``idle``, ``span``, ``drift`` and ``noise`` per sensor in ``SENSORS``; ``m`` is 2 for the
  failing component's signature sensors (bearing: vibration, acoustic, temperature; pump: pressure,
  flow; motor: current, temperature, power_kw; seal: oil_temp, pressure) and 1 otherwise;
  ``bias`` is ``0.5 · noise · N(0,1)`` fixed per machine and sensor. Voltage and humidity carry no
  signal. Normalising sensors per regime exposes the drift; cycles-to-failure is the regression
  target, "fails within N cycles" the classification target.

Dirt:

- malformed line (telemetry 0.2 %; maintenance 0.5 %): truncated (first 20–80 %) or garbage (HTML error page,
  binary junk)
- missing field (telemetry 1 %; maintenance 2 %): telemetry: one sensor left out; maintenance: component empty
- wrong type (telemetry 0.4 %; maintenance 2 %): telemetry: one sensor as a string (``"23.5"``, ``"NaN"`` or
  ``"ERR"``); maintenance: ts as ``2026-11-20 14:00`` (site local time, no offset)
- inconsistent codes (telemetry –; maintenance 5 %): kind in upper case or capitalised (``FAILURE``,
  ``Repair``)
- duplicate delivery (telemetry 0.3 %; maintenance 2 %): the same line again 6 h later (maintenance: next day)
- late delivery (telemetry 0.5 % of machine-hours; maintenance 10 % of rows): a gateway buffers an hour of
  readings and delivers it 1–2 days (+ up to 1 day) later; a technician logs work 1–3 days late
- clock skew (telemetry 5 % of machines; maintenance –): the machine clock is off by ±1–10 min
- various offsets (telemetry all; maintenance all): ts in the site's UTC offset (-05:00, +00:00, +01:00,
  +05:30, +08:00, +09:00)
- schema change (telemetry from the schema-change day; maintenance –): ``vibration`` renamed to
  ``vibration_mm_s`` (new firmware 4.0.x)
"""

from __future__ import annotations

import math
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
    array_sql,
    as_us,
    below,
    between,
    choice,
    dirt_kind,
    draw,
    draw_column,
    draw_normal,
    idiv,
    int_between,
    iso_timestamp,
    local_clock,
    lookup,
    malformed,
    partitions_for,
    round_to,
    row_key,
    select_sql,
    shards_for,
    sql_lit,
    uniform,
    weighted_choice,
    with_csv_line,
    with_draws,
    with_duplicates,
    with_sql,
)


@dataclass(frozen=True)
class Sensor:
    name: str
    idle: float  # value at load 0 for a new machine
    span: float  # added at full load
    drift: float  # added at failure (h = 1), before the component multiplier
    noise: float  # standard deviation of the reading noise
    decimals: int


SENSORS: tuple[Sensor, ...] = (
    Sensor("temperature", 60.0, 25.0, 12.0, 1.0, 2),
    Sensor("pressure", 4.0, 3.0, -1.2, 0.08, 3),
    Sensor("vibration", 1.5, 2.0, 4.0, 0.25, 3),
    Sensor("rpm", 900.0, 2100.0, -60.0, 8.0, 1),
    Sensor("current", 20.0, 45.0, 8.0, 0.8, 2),
    Sensor("voltage", 400.0, 0.0, 0.0, 2.0, 1),
    Sensor("flow", 80.0, 120.0, -25.0, 2.5, 2),
    Sensor("oil_temp", 50.0, 20.0, 10.0, 0.8, 2),
    Sensor("humidity", 45.0, 0.0, 0.0, 5.0, 1),
    Sensor("torque", 150.0, 250.0, 20.0, 4.0, 1),
    Sensor("acoustic", 70.0, 12.0, 6.0, 0.7, 2),
    Sensor("power_kw", 15.0, 60.0, 6.0, 1.0, 2),
)

# (setting_1 = load, setting_2 = speed ratio, setting_3 = coolant mode)
REGIMES: tuple[tuple[float, float, float], ...] = (
    (0.25, 0.50, 60.0),
    (0.40, 0.62, 60.0),
    (0.55, 0.70, 100.0),
    (0.70, 0.84, 100.0),
    (0.85, 0.90, 100.0),
    (1.00, 1.00, 100.0),
)


@dataclass(frozen=True)
class Component:
    name: str
    weight: float
    signature: tuple[str, ...]  # sensors that drift twice as much when this component wears


COMPONENTS: tuple[Component, ...] = (
    Component("bearing", 0.35, ("vibration", "acoustic", "temperature")),
    Component("pump", 0.25, ("pressure", "flow")),
    Component("motor", 0.25, ("current", "temperature", "power_kw")),
    Component("seal", 0.15, ("oil_temp", "pressure")),
)


TELEMETRY_DIRT = DirtRates(malformed=0.002, missing=0.01, wrong_type=0.004, duplicate=0.003)
LOG_DIRT = DirtRates(malformed=0.005, missing=0.02, wrong_type=0.02, duplicate=0.02)


@dataclass(frozen=True)
class FleetRules:
    """Every rate and rule of the telemetry and maintenance generators (see the module docstring)."""

    machines_per_scale: int = 30
    cycle_minutes: int = 10
    slot_days: int = 21
    overhaul_hours: int = 4
    life_days: tuple[float, float] = (2.5, 9.0)
    repair_hours: tuple[float, float] = (4.0, 36.0)
    degradation_exponent: float = 2.0
    signature_multiplier: float = 2.0
    machine_bias_sd: float = 0.5  # in units of the sensor's noise
    regime_hours: int = 1
    setting_noise: float = 0.002
    read_jitter_seconds: int = 20
    site_offsets: tuple[tuple[int, float], ...] = (
        (-300, 0.2),
        (0, 0.15),
        (60, 0.3),
        (330, 0.1),
        (480, 0.15),
        (540, 0.1),
    )
    renamed_field: tuple[str, str] = ("vibration", "vibration_mm_s")
    latency_seconds: tuple[int, int] = (5, 60)
    late_hour_rate: float = 0.005
    late_days: tuple[int, int] = (1, 2)
    duplicate_delay_hours: int = 6
    telemetry_dirt: DirtRates = TELEMETRY_DIRT
    wrong_values: tuple[str, ...] = ("quoted", "NaN", "ERR")
    skewed_machine_rate: float = 0.05
    max_skew_minutes: int = 10
    log_delay_hours: tuple[float, float] = (0.5, 8.0)
    log_late_rate: float = 0.1
    log_late_days: tuple[int, int] = (1, 3)
    log_dirt: DirtRates = LOG_DIRT
    kind_casing_rate: float = 0.05
    windows_per_day: int = 4
    scale_per_shard: int = 25
    rows_per_partition: int = 50_000

    @property
    def cycle_us(self) -> int:
        return self.cycle_minutes * MINUTE_US

    @property
    def cycles_per_day(self) -> int:
        return DAY_US // self.cycle_us

    @property
    def slot_us(self) -> int:
        return self.slot_days * DAY_US

    @property
    def lives_per_slot(self) -> int:
        """Upper bound on lives in a slot (each lasts at least ``life_days[0]``)."""
        return math.ceil(self.slot_days / self.life_days[0]) + 1

    @property
    def lookback_days(self) -> int:
        """Event days before the window whose rows can still be delivered in it."""
        return max(self.late_days[1], self.log_late_days[1]) + 3


RULES = FleetRules()
MAINTENANCE_COLUMNS = ("machine_id", "ts", "kind", "component")


def machine_id(machine: Sql) -> Sql:
    return f"format_string('MCH-%05d', {machine})"


def machines(spark: SparkSession, window: Window, rules: FleetRules = RULES) -> DataFrame:
    """One row per machine with its fixed attributes: slot phase, site offset, clock skew."""
    n = rules.machines_per_scale * window.scale
    expected_rows = n * (window.days + rules.lookback_days) * rules.cycles_per_day
    partitions = min(n, partitions_for(spark, expected_rows, rules.rows_per_partition))
    rows = with_sql(
        spark.range(0, n, numPartitions=partitions).withColumnRenamed("id", "machine"),
        {"machine_rk": row_key(window.seed, "machine", "machine")},
    )

    def u(salt: str) -> Sql:
        return draw("machine_rk", salt)

    sign = f"CASE WHEN {u('skew-sign')} < 0.5D THEN -1 ELSE 1 END"
    skew = as_us(f"{int_between((1, rules.max_skew_minutes), u('skew'))} * {sign}", MINUTE_US)
    return with_sql(
        rows,
        {
            "phase_us": as_us(below(rules.slot_days * 24 * 60, u("phase")), MINUTE_US),
            "site_offset_min": weighted_choice(dict(rules.site_offsets), u("site")),
            "skew_us": f"CASE WHEN {u('skewed')} < {sql_lit(rules.skewed_machine_rate)} THEN {skew} ELSE 0L "
                       "END",
            # calibration offset of each sensor, fixed per machine
            **{
                f"bias_{s.name}": f"{draw_normal('machine_rk', f'bias/{s.name}')} * "
                                  f"{sql_lit(rules.machine_bias_sd * s.noise)}"
                for s in SENSORS
            },
        },
    )


def slots(machines_df: DataFrame, lo_us: int, hi_us: int, rules: FleetRules = RULES) -> DataFrame:
    """Every (machine, slot) overlapping ``[lo_us, hi_us)``; slot ``k`` starts at ``phase + k·slot``."""
    first = idiv(f"{lo_us}L - phase_us", rules.slot_us)
    last = idiv(f"{hi_us - 1}L - phase_us", rules.slot_us)
    rows = machines_df.withColumn("slot", F.explode(F.expr(f"sequence({first}, {last})")))
    rows = with_sql(rows, {"slot_start_us": f"phase_us + slot * {rules.slot_us}L"})
    return with_sql(rows, {"slot_end_us": f"slot_start_us + {rules.slot_us}L"})


def lives(slots_df: DataFrame, seed: int, rules: FleetRules = RULES) -> DataFrame:
    """Explode slots into lives: start, nominal length, failure or censoring, failing component."""
    lo_cycles = rules.life_days[0] * rules.cycles_per_day
    hi_cycles = rules.life_days[1] * rules.cycles_per_day
    n = rules.lives_per_slot

    def life_cycles(j: Sql) -> Sql:
        length = between(lo_cycles, hi_cycles, uniform(seed, "life/length", "machine", "slot", j))
        return f"CAST(floor({length}) AS BIGINT)"

    def repair_us(j: Sql) -> Sql:
        hours = between(*rules.repair_hours, uniform(seed, "life/repair", "machine", "slot", j))
        return f"CAST(floor({hours} * {sql_lit(float(HOUR_US))}) AS BIGINT)"

    durations = ", ".join(
        f"{life_cycles(str(j))} * {rules.cycle_us}L + {repair_us(str(j))}" for j in range(n)
    )
    df = with_sql(slots_df, {"durations": f"array({durations})"})
    df = df.withColumn("life", F.explode(F.expr(f"sequence(0, {n - 1})")))
    before = "aggregate(slice(durations, 1, life), 0L, (acc, x) -> acc + x)"
    df = with_sql(
        df,
        {
            "start_us": f"slot_start_us + {rules.overhaul_hours * HOUR_US}L + {before}",
            "life_cycles": life_cycles("life"),
            "repair_us": repair_us("life"),
            "component": weighted_choice(
                {c.name: c.weight for c in COMPONENTS},
                uniform(seed, "life/component", "machine", "slot", "life"),
            ),
        },
    ).filter("start_us < slot_end_us")
    df = with_sql(df, {"fail_us": f"start_us + life_cycles * {rules.cycle_us}L"})
    df = with_sql(df, {"fails": "fail_us <= slot_end_us"})
    cut_cycles = f"(-{idiv('start_us - slot_end_us', rules.cycle_us)})"  # ceil((end - start) / cycle)
    return with_sql(
        df, {"n_cycles": f"CASE WHEN fails THEN life_cycles ELSE least({cut_cycles}, life_cycles) END"}
    ).drop("durations")


def fleet_lives(spark: SparkSession, window: Window, rules: FleetRules = RULES) -> DataFrame:
    """All lives that overlap the window plus its lookback."""
    lo = (window.first_day - rules.lookback_days) * DAY_US
    hi = (window.last_day + 1) * DAY_US
    return lives(slots(machines(spark, window, rules), lo, hi, rules), window.seed, rules)


# ----------------------------------------------------------------------------------------------
# telemetry


def readings(lives_df: DataFrame, window: Window, rules: FleetRules = RULES) -> DataFrame:
    """Typed ground truth: one row per operating cycle in the window + lookback, with health and RUL."""
    seed = window.seed
    lo = (window.first_day - rules.lookback_days) * DAY_US
    hi = (window.last_day + 1) * DAY_US
    c_lo = f"greatest(-{idiv(f'start_us - {lo}L', rules.cycle_us)}, 0L)"
    c_hi = f"least({idiv(f'{hi - 1}L - start_us', rules.cycle_us)}, n_cycles - 1)"
    df = with_sql(lives_df, {"c_lo": c_lo, "c_hi": c_hi}).filter("c_lo <= c_hi")
    df = df.withColumn("c", F.explode(F.expr("sequence(c_lo, c_hi)")))
    df = with_sql(df, {"nominal_us": f"start_us + c * {rules.cycle_us}L"})
    df = with_sql(df, {"reading_rk": row_key(seed, "reading", "machine", "nominal_us")})

    def u(salt: str) -> Sql:
        return draw("reading_rk", salt)

    regime_block = idiv("nominal_us", rules.regime_hours * HOUR_US)
    df = with_sql(
        df,
        {
            "ts_us": f"nominal_us + CAST(floor({u('jitter')} * "
                     f"{sql_lit(float(rules.read_jitter_seconds * SECOND_US))}) AS BIGINT)",
            "cycle": "CAST(c + 1 AS INT)",
            "regime": below(len(REGIMES), uniform(seed, "reading/regime", "machine", regime_block)),
            "health": f"pow((c + 1) / life_cycles, {sql_lit(rules.degradation_exponent)})",
            "rul_cycles": "CASE WHEN fails THEN life_cycles - c - 1 END",
            "component_no": f"array_position({array_sql([c.name for c in COMPONENTS])}, component) - 1",
        },
    )
    settings = {
        f"setting_{i + 1}": round_to(
            lookup([r[i] for r in REGIMES], "regime")
            + (
                f" + {draw_normal('reading_rk', f'setting{i}')} * {sql_lit(rules.setting_noise)}"
                if i < 2
                else ""
            ),
            4,
        )
        for i in range(3)
    }
    load = lookup([r[0] for r in REGIMES], "regime")
    sensors = {}
    for s in SENSORS:
        multiplier = lookup(
            [rules.signature_multiplier if s.name in c.signature else 1.0 for c in COMPONENTS], "component_no"
        )
        value = (
            f"{sql_lit(s.idle)} + {load} * {sql_lit(s.span)} + {sql_lit(s.drift)} * {multiplier} * health "
            f"+ bias_{s.name} + {draw_normal('reading_rk', s.name)} * {sql_lit(s.noise)}"
        )
        sensors[s.name] = round_to(value, s.decimals)
    return with_sql(df, {**settings, **sensors})


def telemetry_frame(spark: SparkSession, window: Window, rules: FleetRules = RULES) -> DataFrame:
    """Typed ground truth of every reading that can reach the window (``health``, ``rul_cycles``, ...)."""
    return readings(fleet_lives(spark, window, rules), window, rules)


def telemetry_lines(df: DataFrame, window: Window, rules: FleetRules = RULES) -> DataFrame:
    """JSON text of each reading with the documented dirt; adds ``dirt`` and ``line``."""

    def u(salt: str) -> Sql:
        return draw("reading_rk", salt)

    df = with_sql(
        with_draws(df, "reading_rk", "dirt"),
        {
            "dirt": dirt_kind(rules.telemetry_dirt, draw_column("dirt")),
            "dirt_sensor": choice([s.name for s in SENSORS], u("dirt-sensor")),
            "wrong_value": choice(rules.wrong_values, u("dirt-wrong")),
            "schema_v2": f"ts_us >= {window.schema_change_day * DAY_US}L",
        },
    )
    firmware = (
        "CASE WHEN schema_v2 THEN format_string('4.0.%d', pmod(machine, 3)) "
        "ELSE format_string('3.%d.%d', pmod(slot, 10), pmod(machine, 4)) END"
    )
    fields = {
        "machine_id": machine_id("machine"),
        "ts": iso_timestamp("ts_us + skew_us", "site_offset_min"),
        "cycle": "cycle",
        "setting_1": "setting_1",
        "setting_2": "setting_2",
        "setting_3": "setting_3",
        **{
            s.name: f"CASE WHEN dirt = 'missing' AND dirt_sensor = '{s.name}' THEN NULL ELSE {s.name} END"
            for s in SENSORS
        },
        "firmware": firmware,
    }
    record = ", ".join(f"'{name}', {value}" for name, value in fields.items())
    df = with_sql(df, {"json": f"to_json(named_struct({record}))"})
    field = "concat('\"', dirt_sensor, '\":')"
    replacement = (
        f"CASE WHEN wrong_value = 'quoted' THEN concat({field}, '\"$1\"') "
        f"ELSE concat({field}, '\"', wrong_value, '\"') END"
    )
    typed = (f"CASE WHEN dirt = 'wrong_type' THEN regexp_replace(json, concat({field}, '(-?[0-9.E]+)'), "
        f"{replacement}) ELSE json END")
    old, new = rules.renamed_field
    df = with_sql(
        df,
        {"json": f"CASE WHEN schema_v2 THEN replace({typed}, '\"{old}\":', '\"{new}\":') ELSE {typed} END"},
    )
    return with_sql(
        df,
        {
            "line": f"CASE WHEN dirt = 'malformed' THEN {malformed('json', 'reading_rk', 'malformed')} ELSE "
                    "json END"
        },
    )


def telemetry_delivery(seed: int, rules: FleetRules = RULES) -> Sql:
    """Seconds after the reading; a buffered (late) machine-hour arrives 1–2 days (+ up to 1 day) later."""
    hour = idiv("nominal_us", HOUR_US)
    latency = (f"CAST(floor({between(*rules.latency_seconds, draw('reading_rk', 'latency'))} * {SECOND_US}) "
        "AS BIGINT)")
    late = f"{uniform(seed, 'tel/late', 'machine', hour)} < {sql_lit(rules.late_hour_rate)}"
    late_us = (
        f"{as_us(int_between(rules.late_days, uniform(seed, 'tel/late-days', 'machine', hour)), DAY_US)} "
        f"+ CAST(floor({uniform(seed, 'tel/late-time', 'machine', hour)} * {sql_lit(float(DAY_US))}) AS "
        "BIGINT)"
    )
    return f"ts_us + {latency} + CASE WHEN {late} THEN {late_us} ELSE 0L END"


def telemetry_feed(spark: SparkSession, window: Window, rules: FleetRules = RULES) -> FeedLines:
    """The telemetry feed's lines for ``window`` (see the module docstring)."""
    df = telemetry_lines(telemetry_frame(spark, window, rules), window, rules)
    lines = select_sql(
        df,
        {
            "delivered_us": telemetry_delivery(window.seed, rules),
            "key": f"concat({machine_id('machine')}, '/', CAST(nominal_us AS STRING))",
            "line": "line",
        },
    )
    lines = with_duplicates(
        lines,
        window.seed,
        "telemetry/duplicate",
        rules.telemetry_dirt.duplicate,
        rules.duplicate_delay_hours * HOUR_US,
    )
    return FeedLines(
        feed="telemetry",
        ext="jsonl",
        lines=lines,
        windows_per_day=rules.windows_per_day,
        shards=shards_for(window.scale, rules.scale_per_shard),
    )


# ----------------------------------------------------------------------------------------------
# maintenance log


def maintenance_frame(spark: SparkSession, window: Window, rules: FleetRules = RULES) -> DataFrame:
    """Typed maintenance events (machine, site_offset_min, slot, ts_us, kind, component) around the window."""
    lo = (window.first_day - rules.lookback_days) * DAY_US
    hi = (window.last_day + 1) * DAY_US
    slot_rows = slots(machines(spark, window, rules), lo, hi, rules)
    common = ["machine", "site_offset_min", "slot"]
    overhauls = select_sql(
        slot_rows,
        {**{c: c for c in common}, "ts_us": "slot_start_us", "kind": "'preventive'", "component": "'all'"},
    )
    # A failed life is two rows: the failure and (if the machine is back before the slot ends) its repair.
    failed = lives(slot_rows, window.seed, rules).filter("fails")
    failed = failed.withColumn(
        "_row",
        F.explode(F.expr("CASE WHEN fail_us + repair_us < slot_end_us THEN array(0, 1) ELSE array(0) END")),
    )
    work = select_sql(
        failed,
        {
            **{c: c for c in common},
            "ts_us": "CASE WHEN _row = 0 THEN fail_us ELSE fail_us + repair_us END",
            "kind": "CASE WHEN _row = 0 THEN 'failure' ELSE 'repair' END",
            "component": "component",
        },
    )
    return overhauls.unionByName(work).filter(F.expr(f"ts_us >= {lo}L AND ts_us < {hi}L"))


def maintenance_lines(df: DataFrame, seed: int, rules: FleetRules = RULES) -> DataFrame:
    """CSV text of each maintenance row with the documented dirt; adds ``dirt`` and ``line``."""
    df = with_sql(df, {"log_rk": row_key(seed, "log", "machine", "ts_us", "kind")})

    def u(salt: str) -> Sql:
        return draw("log_rk", salt)

    df = with_sql(df, {"dirt": dirt_kind(rules.log_dirt, u("dirt")), "casing": u("casing")})
    kind_text = (
        f"CASE WHEN casing < {sql_lit(rules.kind_casing_rate / 2)} THEN upper(kind) "
        f"WHEN casing < {sql_lit(rules.kind_casing_rate)} THEN initcap(kind) ELSE kind END"
    )
    local = f"ts_us + {as_us('site_offset_min', MINUTE_US)}"
    ts = (
        f"CASE WHEN dirt = 'wrong_type' THEN {local_clock(local, 'yyyy-MM-dd HH:mm')} "
        f"ELSE {iso_timestamp('ts_us', 'site_offset_min', fraction=0)} END"
    )
    df = with_csv_line(
        df, "csv", [machine_id("machine"), ts, kind_text, "CASE WHEN dirt != 'missing' THEN component END"]
    )
    return with_sql(
        df,
        {"line": f"CASE WHEN dirt = 'malformed' THEN {malformed('csv', 'log_rk', 'malformed')} ELSE csv END"},
    )


def maintenance_feed(spark: SparkSession, window: Window, rules: FleetRules = RULES) -> FeedLines:
    """The maintenance feed's lines for ``window`` (see the module docstring)."""
    seed = window.seed
    df = maintenance_lines(maintenance_frame(spark, window, rules), seed, rules)

    def u(salt: str) -> Sql:
        return draw("log_rk", salt)

    delay = (
        f"CAST(floor({between(*rules.log_delay_hours, u('delay'))} * {sql_lit(float(HOUR_US))}) AS BIGINT)"
    )
    late = (f"CASE WHEN {u('late')} < {sql_lit(rules.log_late_rate)} THEN "
        f"{as_us(int_between(rules.log_late_days, u('late-days')), DAY_US)} ELSE 0L END")
    lines = select_sql(
        df,
        {
            "delivered_us": f"ts_us + {delay} + {late}",
            "key": f"concat_ws('/', {machine_id('machine')}, CAST(ts_us AS STRING), kind)",
            "line": "line",
        },
    )
    lines = with_duplicates(lines, seed, "maintenance/duplicate", rules.log_dirt.duplicate, DAY_US)
    return FeedLines(feed="maintenance", ext="csv", lines=lines, header=",".join(MAINTENANCE_COLUMNS))
