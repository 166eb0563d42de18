"""Job-failure alerts: a webhook on a local HTTP server and a shell command get job, date, error, log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

from lakeml.alerts import failure_alert, notify
from lakeml.config import AlertsConfig


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failed_job_posts_to_the_webhook_and_runs_the_command(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = tmp_path / "alert.json"
        env = {**os.environ, "LAKEML_LAKEHOUSE": str(tmp_path / "lake"),
               "LAKEML_LOG_LOCATION": "/var/log/lakeml/x.log"}
        result = subprocess.run(
            [
                sys.executable, "-m", "lakeml.cli", "run", "commerce.ingest_bronze", "--env", "test",
                "--run-date", "2026-03-04",
                "--conf", f"alerts.webhook_url=http://127.0.0.1:{server.server_port}/hook",
                "--conf", f'alerts.command=cat > {out}; echo "$LAKEML_ALERT_JOB" >> {out}.job',
            ],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.returncode == 1, result.stderr  # the job's failure, whatever the alert did
    (posted,) = _Hook.received
    assert posted["job"] == "commerce.ingest_bronze" and posted["run_date"] == "2026-03-04"
    assert "landing folder" in posted["error"] and "\n" not in posted["error"]
    assert posted["log"] == "/var/log/lakeml/x.log" and posted["env"] == "test"
    assert json.loads(out.read_text()) == posted
    assert (tmp_path / "alert.json.job").read_text().strip() == "commerce.ingest_bronze"
    sent = [json.loads(line) for line in result.stderr.splitlines() if '"event": "alert_sent"' in line]
    assert sent and sent[0]["channels"] == ["webhook", "command"]


def test_an_unreachable_webhook_or_failing_command_is_logged_not_raised():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = AlertsConfig(command="exit 7", webhook_url=f"http://127.0.0.1:{port}/", timeout_seconds=2)
    alert = failure_alert("a.job", date(2026, 1, 2), "test", "boom\nsecond line")
    assert alert["error"] == "boom"
    assert notify(settings, alert) == []
