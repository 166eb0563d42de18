"""The lakeml command: list, run JOB, pipeline, generate, status.

Exit codes: 0 ok, 1 job failed (status: something failed or stale), 2 usage/config error,
3 another run holds the lakehouse lock.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from lakeml import runlog
from lakeml.config import Config, available_envs, load_config
from lakeml.errors import LakemlError, UsageError

if TYPE_CHECKING:
    from lakeml.steps import DateRange


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other usage error
        raise UsageError(message)


def parse_run_date(text: str | None, option: str = "--run-date") -> date:
    """``YYYY-MM-DD`` (default: today in UTC); UsageError naming ``option`` otherwise."""
    if text is None:
        return datetime.now(UTC).date()
    try:
        # Only the documented form: fromisoformat also takes 20261201 or 2026-W49-1, which a cron
        # line's $(date ...) typo should not slip through as.
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"bad {option} '{text}': expected YYYY-MM-DD") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="local", help="config environment: conf/<env>.yaml (default local)")
    p.add_argument("--run-date", help="date the job runs for, YYYY-MM-DD (default today, UTC)")
    p.add_argument(
        "--since",
        help="backfill: dated jobs (features, scoring) cover every date from this one to --run-date",
    )
    p.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="run even a job whose inputs and settings are unchanged since its last run for these dates",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lakeml", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="show the jobs and their dependencies")
    run = sub.add_parser("run", help="run one job", description="Run one job of the DAG (see `lakeml list`).")
    run.add_argument(
        "job", help="job name, domain.step (e.g. commerce.build_silver); `lakeml list` shows all"
    )
    _add_common(run)
    _add_force(run)
    pipe = sub.add_parser("pipeline", help="run the DAG in dependency order")
    pipe.add_argument("--from", dest="start", help="start at this job (and run what depends on it)")
    pipe.add_argument("--to", dest="stop", help="stop after this job (running what it needs)")
    pipe.add_argument(
        "--catch-up",
        action="store_true",
        help="dated jobs cover every date from the day after their last successful run (ops/job_runs) "
        "to --run-date, e.g. after the machine was off for a few days",
    )
    _add_common(pipe)
    _add_force(pipe)
    _add_generate(sub)
    status = sub.add_parser(
        "status", help="last run per job, table freshness, quality failures, drift alerts"
    )
    _add_common(status)
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    stream = sub.add_parser("stream", help="run a streaming job (e.g. banking.fraud_alerts)")
    stream.add_argument("job", help=f"streaming job: {', '.join(STREAM_JOBS)}")
    stream.add_argument("--env", default="local", help="config environment: conf/<env>.yaml (default local)")
    stream.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    stream.add_argument(
        "--available-now", action="store_true", help="process every file already landed, then stop"
    )
    return parser


STREAM_JOBS = ("banking.fraud_alerts",)


def _stream(args: argparse.Namespace) -> int:
    """lakeml stream JOB: runs until stopped (Ctrl-C / SIGTERM stop it between micro-batches)."""
    if args.job not in STREAM_JOBS:
        raise UsageError(f"unknown streaming job '{args.job}' (known: {', '.join(STREAM_JOBS)})")
    if args.env not in available_envs():
        raise UsageError(f"unknown env '{args.env}' (known: {', '.join(available_envs())})")
    config = load_config(args.env, args.conf)
    from lakeml.ingest.silver import require_pii_key

    require_pii_key(config)
    runlog.configure(config.run.log_format)
    import signal

    from lakeml.domains.banking.nearline import run_fraud_alerts
    from lakeml.session import build_spark

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    spark = build_spark(config)
    try:
        result = run_fraud_alerts(spark, config, available_now=args.available_now)
    finally:
        spark.stop()
    runlog.event("stream_end", job=args.job, **result)
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="write deterministic raw landing files for every feed")
    gen.add_argument("--env", default="local", help="config environment: conf/<env>.yaml (default local)")
    gen.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    gen.add_argument("--scale", type=int, help="data volume multiplier (default: generate.scale)")
    gen.add_argument("--days", type=int, help="number of delivery days (default: generate.days)")
    gen.add_argument("--seed", type=int, help="random seed (default: generate.seed)")
    gen.add_argument(
        "--end-date", help="last delivery day, YYYY-MM-DD (default: generate.end_date, else today UTC)"
    )


def _load(args: argparse.Namespace) -> tuple[Config, DateRange]:
    """The config and the dates the command covers: --since (default: the run date) to --run-date."""
    from lakeml.steps import DateRange

    run_date = parse_run_date(args.run_date)
    first = run_date if args.since is None else parse_run_date(args.since, "--since")
    if first > run_date:
        raise UsageError(f"--since {first} is after the run date {run_date}")
    if args.env not in available_envs():
        raise UsageError(f"unknown env '{args.env}' (known: {', '.join(available_envs())})")
    return load_config(args.env, args.conf), DateRange(first, run_date)


def main(argv: Sequence[str] | None = None) -> int:
    runlog.configure()
    try:
        return _dispatch(build_parser().parse_args(argv))
    except UsageError as exc:
        print(f"lakeml: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except LakemlError as exc:
        print(f"lakeml: {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "generate":
        return _generate(args)
    if args.command == "stream":
        return _stream(args)
    from lakeml.pipeline import registry, run_job, select_jobs, topological_order

    jobs = registry()
    if args.command == "list":
        print_job_list(jobs, topological_order(jobs))
        return 0
    if args.command == "status":  # exit 1 when a job failed or a table is stale (for monitors)
        from lakeml.status import collect, render

        config, dates = _load(args)
        report = collect(config, topological_order(jobs), dates.last)
        print(render(report, args.json), end="")
        return 1 if report["problems"] else 0
    if args.command == "run":
        if args.job not in jobs:
            raise UsageError(f"unknown job '{args.job}' (known: {', '.join(sorted(jobs)) or 'none'})")
        names = [args.job]
        if args.since is not None and not jobs[args.job].dated:
            dated = ", ".join(n for n in topological_order(jobs) if jobs[n].dated)
            raise UsageError(f"{args.job} runs for one date (--run-date): --since is for the jobs that cover "
                             f"a range ({dated})")
    else:
        names = select_jobs(jobs, args.start, args.stop)
    # Everything that can be wrong with the command line or the environment is checked before Spark starts.
    config, dates = _load(args)
    catch_up = getattr(args, "catch_up", False)
    if catch_up and args.since is not None:
        raise UsageError("--catch-up finds the first date itself: give --since or --catch-up, not both")
    for name in names:
        if jobs[name].preflight is not None:
            jobs[name].preflight(config)  # type: ignore[misc]
    runlog.configure(config.run.log_format)
    from lakeml.alerts import notify_failure
    from lakeml.pipeline import JobRun
    from lakeml.runlock import lakehouse_lock
    from lakeml.session import build_spark

    # One run at a time per lakehouse (exit 3 while another holds it); taken before Spark starts.
    what = f"lakeml {args.command}{' ' + args.job if args.command == 'run' else ''} --run-date {dates.last}"
    runs: list[JobRun] = []
    with lakehouse_lock(config, what):
        spark = build_spark(config)
        try:
            if catch_up:
                dates = _catch_up_dates(spark, config, names, dates.last)
            for name in names:
                try:
                    run_job(jobs[name], spark, config, dates, runs, force=args.force)
                except LakemlError as exc:
                    notify_failure(config.alerts, name, dates.last, config.env, exc)
                    raise
        finally:
            spark.stop()  # under spark-submit, a shutdown hook would otherwise race the temp-dir cleanup
            if args.command == "pipeline":
                from lakeml.summary import render as render_summary

                done = {run.job for run in runs}
                print(render_summary(runs, config, [n for n in names if n not in done]), end="", flush=True)
    return 0


def _catch_up_dates(spark: object, config: Config, names: Sequence[str], run_date: date) -> DateRange:
    """The dates a catch-up covers (logged): from the day after the earliest last successful run."""
    from lakeml.runstate import catch_up_start
    from lakeml.steps import DateRange

    start = catch_up_start(spark, config, names, run_date)  # type: ignore[arg-type]
    dates = DateRange(start or run_date, run_date)
    runlog.event(
        "catch_up", first_date=dates.first.isoformat(), run_date=run_date.isoformat(), days=len(dates)
    )
    return dates


def print_job_list(jobs: Mapping[str, Any], order: Sequence[str]) -> None:
    """``lakeml list``: job, what it runs after and what it does, in columns as wide as their longest
    entry."""
    rows = [(name, ", ".join(jobs[name].depends_on) or "-", jobs[name].description) for name in order]
    name_width = max([len("job"), *(len(r[0]) for r in rows)])
    deps_width = max([len("after"), *(len(r[1]) for r in rows)])
    print(f"{'job':<{name_width}}  {'after':<{deps_width}}  does")
    for name, deps, description in rows:
        print(f"{name:<{name_width}}  {deps:<{deps_width}}  {description}")


def _generate(args: argparse.Namespace) -> int:
    """``lakeml generate``: landing files for all feeds, then one ``generate_end`` log line."""
    import time

    from lakeml.synthetic.core import make_window
    from lakeml.synthetic.landing import run_generation

    started = time.perf_counter()
    if args.env not in available_envs():
        raise UsageError(f"unknown env '{args.env}' (known: {', '.join(available_envs())})")
    config = load_config(args.env, args.conf)
    runlog.configure(config.run.log_format)
    defaults = config.generate
    end_text = args.end_date if args.end_date is not None else defaults.end_date
    try:
        end_date = date.fromisoformat(end_text) if end_text else datetime.now(UTC).date()
    except ValueError:
        source = "--end-date" if args.end_date is not None else "generate.end_date"
        raise UsageError(f"bad {source} '{end_text}': expected YYYY-MM-DD") from None
    window = make_window(  # validates before Spark starts
        scale=defaults.scale if args.scale is None else args.scale,
        days=defaults.days if args.days is None else args.days,
        seed=defaults.seed if args.seed is None else args.seed,
        end_date=end_date,
    )
    from pyspark.sql import SparkSession

    from lakeml.session import build_spark

    owned = SparkSession.getActiveSession() is None  # stop only a session this command started
    spark = build_spark(config, app_name=f"{config.spark.app_name}-generate")
    try:
        report = run_generation(
            spark,
            config.landing_path(),
            scale=window.scale,
            days=window.days,
            seed=window.seed,
            end_date=window.end,
        )
    finally:
        if owned:
            spark.stop()
    runlog.event(
        "generate_end",
        env=config.env,
        landing=report.landing_dir,
        scale=window.scale,
        days=window.days,
        seed=window.seed,
        start_date=window.start.isoformat(),
        end_date=window.end.isoformat(),
        lines=report.lines,
        files=report.files,
        feed_seconds={r.feed: r.seconds for r in report.feeds},
        generate_seconds=report.seconds,
        seconds=round(time.perf_counter() - started, 3),
    )
    return 0


def submit_entry(job_name: str, argv: Sequence[str] | None = None) -> int:
    """Entry for ``jobs/<domain>/<step>.py`` under spark-submit: ``[--env E] [--run-date D] [--since D0]
    [--conf K=V]``
    (``--since`` only for the dated jobs: features and scoring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return main(["run", job_name, *args])


if __name__ == "__main__":
    raise SystemExit(main())
