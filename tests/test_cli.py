"""The lakeml command: DAG listing and selection, exit codes, one-line errors that write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakeml.cli import main, parse_run_date
from lakeml.config import PROJECT_ROOT
from lakeml.errors import UsageError
from lakeml.pipeline import JobSpec, registry, select_jobs, topological_order

LAKEML = [sys.executable, "-m", "lakeml.cli"]


def run_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAKEML_LAKEHOUSE": str(root)}
    return subprocess.run([*LAKEML, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no.such_job", "--env", "test"], "unknown job 'no.such_job'"),
        (["run", "commerce.ingest_bronze", "--env", "nowhere"], "unknown env 'nowhere'"),
        (["run", "commerce.ingest_bronze", "--env", "test", "--run-date", "2026-13-01"], "bad --run-date"),
        (["run", "commerce.ingest_bronze", "--env", "test", "--conf", "justakey"], "malformed --conf"),
        (["pipeline", "--env", "test", "--from", "nope"], "unknown job 'nope'"),
        (
            [
                "pipeline",
                "--env",
                "test",
                "--from",
                "commerce.train_recommender",
                "--to",
                "commerce.build_silver",
            ],
            "selects no job: commerce.build_silver does not depend on commerce.train_recommender",
        ),
        (["frobnicate"], "invalid choice"),
        # Malformed dates of a cron line or a catch-up: nothing runs, no lake is created.
        (
            ["pipeline", "--env", "test", "--catch-up", "--run-date", "2026-02-30"],
            "bad --run-date '2026-02-30'",
        ),
        (["pipeline", "--env", "test", "--catch-up", "--run-date", "20261201"], "bad --run-date '20261201'"),
        (
            ["pipeline", "--env", "test", "--since", "2026-13-01"],
            "bad --since '2026-13-01': expected YYYY-MM-DD",
        ),
        (
            ["pipeline", "--env", "test", "--catch-up", "--since", "2026-11-01"],
            "give --since or --catch-up, not both",
        ),
        # A trainer runs for one date: --since would be ignored, so it is refused.
        (
            [
                "run",
                "banking.train_fraud",
                "--env",
                "test",
                "--run-date",
                "2026-03-02",
                "--since",
                "2026-03-01",
            ],
            "banking.train_fraud runs for one date (--run-date): --since is for the jobs that cover a range "
            "(",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_write_nothing(tmp_path, args, message):
    result = run_cli(*args, root=tmp_path / "lake")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "lake").exists()


def test_cron_run_with_a_malformed_date_is_one_error_line_and_runs_nothing(tmp_path):
    env = {**os.environ, "LAKEML_LAKEHOUSE": str(tmp_path / "lake")}
    cron = [str(PROJECT_ROOT / "scripts" / "cron-run"), "--env", "test", "--run-date", "2026-11-31"]
    result = subprocess.run(cron, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    # The wrapper's own line says what it runs; lakeml's error is one line after it.
    started, error = [line for line in result.stderr.splitlines() if line.strip()]
    assert started.startswith("cron-run: ") and error == (
        "lakeml: error: bad --run-date '2026-11-31': expected YYYY-MM-DD"
    )
    assert not (tmp_path / "lake").exists()


def test_missing_landing_folder_fails_the_job_with_exit_1(tmp_path):
    result = run_cli("run", "commerce.ingest_bronze", "--env", "test", root=tmp_path / "lake")
    assert result.returncode == 1, result.stderr
    end = [json.loads(line) for line in result.stderr.splitlines() if line.startswith('{"event": "job_end"')]
    assert end and end[0]["status"] == "failed" and "landing folder" in end[0]["error"]
    # The command's own last word (the JVM may still log after it while it shuts down).
    errors = [line for line in result.stderr.splitlines() if line.startswith("lakeml: ")]
    assert errors and "does not exist" in errors[-1]


def test_missing_pii_key_exits_2_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LAKEML_PII_KEY"}
    env["LAKEML_LAKEHOUSE"] = str(tmp_path)
    result = subprocess.run(
        [*LAKEML, "run", "banking.build_silver", "--env", "test"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "LAKEML_PII_KEY (silver.pii_key_env) is not set" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "silver").exists()
    # Checked before Spark starts: no job started, no Spark output.
    assert "job_start" not in result.stderr and "spark" not in result.stderr.lower()


def test_help_texts_name_the_job_argument_and_show_no_raw_markup(capsys):
    for argv in (["--help"], ["run", "--help"], ["pipeline", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "``" not in out, out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "job name, domain.step" in help_text


def test_list_shows_every_job_with_dependencies(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["job", "after", "does"]
    for name in registry():
        assert any(line.startswith(name + " ") for line in lines[1:])
    # Columns line up: "after" and "does" start at the same offset on every line, the longest name included.
    header = lines[0]
    for line in lines[1:]:
        after, does = header.index("after"), header.index("does")
        assert line[after - 2 : after] == "  " and line[after] != " " and line[does - 2 : does] == "  "


def test_dag_order_and_selection():
    def noop(ctx):  # pragma: no cover - never run
        raise AssertionError

    jobs = {
        "a.ingest": JobSpec("a.ingest", noop, (), ""),
        "a.silver": JobSpec("a.silver", noop, ("a.ingest",), ""),
        "a.features": JobSpec("a.features", noop, ("a.silver",), ""),
        "b.ingest": JobSpec("b.ingest", noop, (), ""),
        "ab.train": JobSpec("ab.train", noop, ("a.features", "b.ingest"), ""),
    }
    order = topological_order(jobs)
    assert (
        order.index("a.ingest")
        < order.index("a.silver")
        < order.index("a.features")
        < order.index("ab.train")
    )
    assert select_jobs(jobs, "a.silver", None) == ["a.silver", "a.features", "ab.train"]
    assert select_jobs(jobs, None, "a.silver") == ["a.ingest", "a.silver"]
    assert select_jobs(jobs, "a.silver", "a.features") == ["a.silver", "a.features"]
    cyclic = {**jobs, "a.ingest": JobSpec("a.ingest", noop, ("ab.train",), "")}
    with pytest.raises(Exception, match="cycle"):
        topological_order(cyclic)


def test_run_date_parsing():
    assert str(parse_run_date("2026-11-20")) == "2026-11-20"
    for bad in ("20-11-2026", "20261120", "2026-W47-5", "2026-11-20T00:00"):
        with pytest.raises(UsageError, match=f"bad --run-date '{bad}'"):
            parse_run_date(bad)
    with pytest.raises(UsageError, match="bad --since '2026-02-29'"):
        parse_run_date("2026-02-29", "--since")


@pytest.mark.parametrize("version", [None, "1.8.0_292", "11.0.2"])
def test_missing_or_old_java_is_one_sentence(tmp_path, version):
    java_home = tmp_path / "jdk"
    if version:
        (java_home / "bin").mkdir(parents=True)
        fake = java_home / "bin" / "java"
        fake.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2020-01-01' >&2\n")
        fake.chmod(0o755)
    env = {**os.environ, "JAVA_HOME": str(java_home), "LAKEML_LAKEHOUSE": str(tmp_path / "lake")}
    result = subprocess.run(
        [*LAKEML, "run", "commerce.ingest_bronze", "--env", "test"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "needs Java 17 or newer" in last and "Traceback" not in result.stderr
